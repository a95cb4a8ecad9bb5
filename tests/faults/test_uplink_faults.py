"""Store-and-forward under uplink and process faults.

Each test ends with the same verdict, taken only through the public tools: after a clean
stop nothing waits in the outbox, every reading ``edge export`` finds in the store reached
the platform's persistent-session subscriber, the seqs it received run from 1 to the
store's last without a gap, and SQLite's ``integrity_check`` passes after every fault.
"""

from __future__ import annotations

import random
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.faults.harness import (
    assert_everything_stored_was_delivered,
    integrity_check,
    outbox_waiting,
    received_seqs,
    start_simulator,
    subscribe,
    wait_for_log,
    watch,
)
from tests.support import (
    Broker,
    Recorder,
    free_port,
    round_window_ms,
    site_config,
    start_edge,
)

KILLS = 10
KILL_SEED = 20261124  # fixed: a failing kill moment can be replayed exactly
OUTAGE_S = 5.0
FREEZE_S = 5.0  # below paho's keepalive detection (5 s ping + 5 s wait): a silent stall


@dataclass
class Site:
    config: Path
    store_dir: Path

    @property
    def db(self) -> Path:
        return self.store_dir / "edge.db"


def make_site(tmp_path: Path, broker: Broker, stack: ExitStack, interval: float) -> Site:
    """Two Modbus devices (three points) polled every ``interval``, no rules, health every
    second, and an uplink that retries quickly so the tests need not wait out a backoff."""
    modbus_port = free_port()
    # A message a round: the backlog below is counted in messages.
    config = site_config(tmp_path, broker.port, modbus_port, interval=interval, rules=[],
                         commit_window_ms=round_window_ms(interval))
    data = yaml.safe_load(config.read_text())
    data["mqtt"].update({"reconnect_min_s": 0.2, "reconnect_max_s": 1.0})
    data["health"] = {"interval_s": 1}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"level-1/water_level": [[0, 123.0]]}))
    sim = start_simulator(config, tmp_path / "sim.log", values=values, ports=[modbus_port])
    stack.callback(sim.kill)
    return Site(config, tmp_path)


def wait_delivered_up_to_now(rec: Recorder, since_ms: int, timeout: float) -> int:
    """Wait for a health message published after ``since_ms`` and then for every seq up to
    the last one it reports. Returns that seq."""
    def fresh_health(r: Recorder) -> bool:
        return any(h["ts"] > since_ms for h in r.on("/health"))

    rec.wait_for(fresh_health, timeout, "a health message after the fault")
    last = max(h["outbox"]["last_seq"] for h in rec.on("/health") if h["ts"] > since_ms)
    rec.wait_for(lambda r: set(range(1, last + 1)) <= received_seqs(r), timeout,
                 f"every seq up to {last}")
    return int(last)


def test_broker_outage_then_a_broker_that_never_acknowledges(
        tmp_path: Path, private_broker: Broker, stack: ExitStack) -> None:
    """A 4G link that drops (broker stopped, then back), then a broker that accepts data
    but never acknowledges it (SIGSTOP: the TCP connection stays open, no PUBACK). Models
    the first seconds of an outage that other gateways lose, and a half-open link that
    must not count anything as delivered."""
    site = make_site(tmp_path, private_broker, stack, interval=0.2)
    rec = subscribe(stack, private_broker.port, persistent=True)
    gateway = watch(stack, start_edge(["run", "-c", str(site.config)], tmp_path / "gw.log"))
    rec.wait_for(lambda r: len(r.on("/telemetry")) >= 5, 20, "telemetry before the outage")

    private_broker.stop()
    time.sleep(OUTAGE_S)
    assert integrity_check(site.db) == "ok"
    # Ten polls a second (two devices every 0.2 s) went nowhere: they wait in the outbox
    # (half of them at least, on a loaded machine).
    assert outbox_waiting(site.config) >= OUTAGE_S * 10 * 0.5
    private_broker.start()
    restarted_ms = time.time_ns() // 1_000_000
    wait_delivered_up_to_now(rec, restarted_ms, 30)

    private_broker.freeze()
    time.sleep(FREEZE_S)
    assert integrity_check(site.db) == "ok"
    assert outbox_waiting(site.config) >= FREEZE_S * 10 * 0.5, \
        "what a frozen broker never acknowledged must still be in the outbox"
    private_broker.thaw()
    thawed_ms = time.time_ns() // 1_000_000
    wait_delivered_up_to_now(rec, thawed_ms, 30)
    assert gateway.stop() == 0, gateway.output()[-3000:]

    assert integrity_check(site.db) == "ok"
    _, stored = assert_everything_stored_was_delivered(site.config, site.store_dir, rec)
    assert stored >= 3 * (OUTAGE_S + FREEZE_S) / 0.2 * 0.5


def test_gateway_sigkill_at_random_moments(tmp_path: Path, private_broker: Broker,
                                           stack: ExitStack) -> None:
    """Power cuts and OOM kills: the gateway is SIGKILLed at seeded random moments while it
    polls every 0.1 s (a commit, an acknowledgement write or a backlog replay is nearly
    always in progress). Models SD-card gateways whose store is corrupted or whose last
    poll round is lost on ``kill -9`` (lessons.md: Kura #2169, ThingsBoard)."""
    site = make_site(tmp_path, private_broker, stack, interval=0.1)
    rec = subscribe(stack, private_broker.port, persistent=True)
    rng = random.Random(KILL_SEED)
    moments: list[float] = []
    for i in range(KILLS):
        gateway = watch(stack, start_edge(["run", "-c", str(site.config)],
                                          tmp_path / f"gw-{i}.log"))
        wait_for_log(gateway, "gateway_started", 20)
        moments.append(rng.uniform(0.0, 1.5))
        time.sleep(moments[-1])
        gateway.kill()
        verdict = integrity_check(site.db)
        assert verdict == "ok", f"kill {i} at {moments[-1]:.3f}s after start: {verdict}"

    gateway = watch(stack, start_edge(["run", "-c", str(site.config)], tmp_path / "gw.log"))
    wait_for_log(gateway, "gateway_started", 20)
    wait_delivered_up_to_now(rec, time.time_ns() // 1_000_000, 40)
    assert gateway.stop() == 0, gateway.output()[-3000:]

    assert integrity_check(site.db) == "ok"
    _, stored = assert_everything_stored_was_delivered(site.config, site.store_dir, rec)
    # Each incarnation polled and stored something before it died.
    assert stored >= KILLS * 2, (stored, moments)
