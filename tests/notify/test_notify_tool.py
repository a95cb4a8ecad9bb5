"""`edge notify-test`: through the modem when the gateway is down, through the gateway
when it runs, and clear errors."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from pathlib import Path

import yaml

from edge.channels.notify_tool import notify_test
from edge.config import load_config
from simulator.modem import SimulatedModem
from tests.notify import independent
from tests.notify.harness import GRID, KEEPER, Site, site
from tests.support import free_port, run_edge


def write_site(tmp_path: Path, modem: Path, **notify: object) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site(tmp_path, free_port(), modem, **notify),
                                   allow_unicode=True), encoding="utf-8")
    return path


def test_with_the_gateway_stopped_the_command_opens_the_modem(tmp_path: Path) -> None:
    with SimulatedModem(tmp_path / "modem", first_reference=17) as modem:
        config = write_site(tmp_path, modem.link_path)
        result = run_edge(["notify-test", "-c", str(config), "--to", "keeper",
                           "--note", "汛前检查"])
        assert result.returncode == 0, result.stdout + result.stderr
        assert "the gateway is not running" in result.stdout
        assert "sent to keeper (+8613800000001): message reference(s) 17" in result.stdout
        [text] = [t for t in modem.sent if t.destination == KEEPER]
        decoded = independent.submit_text([p.pdu for p in text.parts])
        assert decoded.startswith("【某某水库】测试短信：报警短信通道正常，")
        assert decoded.endswith("无需回复。 汛前检查")
    conn = sqlite3.connect(tmp_path / "edge.db")
    try:
        # Stored before it was sent, with its outcome; the event waits for the uplink.
        assert conn.execute("SELECT kind, state, refs, tries FROM notify_messages").fetchall() \
            == [("test", "sent", "[17]", 1)]
        [(payload,)] = conn.execute("SELECT payload FROM outbox WHERE kind='event'").fetchall()
        event = json.loads(payload)["event"]
        assert (event["type"], event["outcome"], event["references"]) == (
            "notification", "sent", [17])
    finally:
        conn.close()


def test_errors_name_what_is_wrong(tmp_path: Path) -> None:
    config = write_site(tmp_path, tmp_path / "no-modem-here")
    result = run_edge(["notify-test", "-c", str(config), "--to", "mayor"])
    assert result.returncode == 2
    assert result.stderr.strip() == ("edge notify-test: --to 'mayor': no such contact "
                                     "(contacts: keeper, water-officer, grid-staff)")
    # No modem answers: one try, and the failure is said at once.
    result = run_edge(["notify-test", "-c", str(config), "--to", "keeper"], timeout=90)
    assert result.returncode == 1
    assert "failed: port_unavailable" in result.stdout
    plain = tmp_path / "plain.yaml"
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    del data["notify"]
    plain.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = run_edge(["notify-test", "-c", str(plain), "--to", "keeper"])
    assert result.returncode == 2
    assert "has no notify.modem" in result.stderr


def test_with_the_gateway_running_the_text_is_queued_for_it(tmp_path: Path) -> None:
    async def scenario() -> str:
        async with Site(tmp_path) as s:
            await s.until(lambda: (tmp_path / "status.json").exists(), "the status file")
            settings = load_config(tmp_path / "site.yaml").settings
            out = io.StringIO()
            code = await asyncio.to_thread(notify_test, settings, "grid-staff", "", 20.0, out)
            assert code == 0, out.getvalue()
            assert len(s.texts_to(GRID)) == 1
            return out.getvalue()

    printed = asyncio.run(scenario())
    assert "the gateway is running" in printed and "sent to grid-staff" in printed
