"""The health snapshot within the broker's packet limit (edge/healthfit.py)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from edge.healthfit import fit_snapshot, fitted_json


def device(n: int, online: bool = True, failures: int = 0, errors: int = 0) -> dict[str, Any]:
    return {"device": f"piezometer-{n:03d}", "bus": f"lan-{n:03d}", "online": online,
            "last_good_ms": 1796606587227, "polls": 3600, "errors": errors,
            "consecutive_failures": failures, "requests_per_cycle": 1,
            "last_error": "timeout" if failures else None, "error_kinds": {}}


def snapshot(devices: list[dict[str, Any]]) -> dict[str, Any]:
    return {"ts": 1796606587227, "version": "0.9", "config": "ab" * 32,
            "outbox": {"depth": 0, "alarms": 0, "oldest_age_s": None, "inflight": 0,
                       "last_seq": 123456},
            "buses": {d["bus"]: {"connected": d["online"], "cycles": 3600, "reconnects": 0,
                                 "bytes_sent": 43200, "bytes_received": 54000}
                      for d in devices},
            "devices": devices, "active_alarms": 0}


def size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")))


def test_a_snapshot_that_fits_is_published_whole() -> None:
    whole = snapshot([device(n) for n in range(5)])
    assert fit_snapshot(whole, size(whole)) is whole


def test_two_hundred_small_devices_keep_those_in_trouble_first_within_the_limit() -> None:
    devices = [device(n) for n in range(200)]
    devices[150] = device(150, online=False, failures=5)
    devices[170] = device(170, failures=1)
    devices[20] = device(20, errors=3)
    whole = snapshot(devices)
    assert size(whole) > 48 * 1024, "the shape this is about: over the default limit"
    fitted = fit_snapshot(whole, 8 * 1024)
    assert size(fitted) <= 8 * 1024
    kept = [d["device"] for d in fitted["devices"]]
    assert {"piezometer-020", "piezometer-150", "piezometer-170"} <= set(kept)
    assert kept == sorted(kept), "in their own order"
    assert "lan-150" in fitted["buses"], "the disconnected bus is kept"
    assert fitted["omitted"] == {"devices": 200 - len(kept),
                                 "buses": 200 - len(fitted["buses"])}
    assert fitted["outbox"] == whole["outbox"] and fitted["config"] == whole["config"]
    assert len(whole["devices"]) == 200, "the snapshot itself is not changed"


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 9), st.integers(0, 99)),
                max_size=60), st.integers(600, 20_000))
def test_the_fitted_snapshot_never_exceeds_the_limit_and_counts_what_it_left(
        states: list[tuple[bool, int, int]], limit: int) -> None:
    devices = [device(n, online, failures, errors)
               for n, (online, failures, errors) in enumerate(states)]
    whole = snapshot(devices)
    fitted = fit_snapshot(whole, limit)
    if fitted is whole:
        assert size(whole) <= limit
        return
    assert size(fitted) <= limit
    assert len(fitted["devices"]) + fitted["omitted"]["devices"] == len(devices)
    assert len(fitted["buses"]) + fitted["omitted"]["buses"] == len(whole["buses"])
    offline_kept = [d for d in fitted["devices"] if not d["online"]]
    online_kept = [d for d in fitted["devices"] if d["online"]]
    if online_kept:
        assert len(offline_kept) == sum(1 for d in devices if not d["online"]), (
            "an online device is kept only once every offline one is")


def test_the_health_message_is_the_fitted_snapshot_s_json() -> None:
    small = snapshot([device(n) for n in range(3)])
    assert fitted_json(small, 10_000) == json.dumps(small, separators=(",", ":"))
    large = snapshot([device(n, online=n % 7 != 0) for n in range(100)])
    text = fitted_json(large, 4096)
    assert len(text) <= 4096
    assert json.loads(text) == fit_snapshot(large, 4096)
