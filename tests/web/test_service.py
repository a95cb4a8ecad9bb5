"""The page as one of the gateway's services (edge/web/service.py): switched on by ``web:``,
built from the gateway's Ports, serving on the daemon's loop, reporting its counts in
health, stopping cleanly; ``edge hash-pin``; the ``web:`` section in a site file."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge.config import ConfigError, GatewaySettings, load_config
from edge.services import SERVICE_TYPES, configured
from edge.web.config import WebConfig
from edge.web.pin import hash_pin, parse_pin_hash, verify_pin
from edge.web.service import SERVICE_TYPE, KeeperPage
from tests.support import REPO, free_port, run_edge, wait_for_port
from tests.web.daemon import level, running, site
from tests.web.sample import PIN, raw_request
from vocab.model import now_ms

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def with_page(path: Path, **web: object) -> GatewaySettings:
    """The test site with a ``web:`` section on a free port of 127.0.0.1."""
    config = WebConfig.model_validate({"listen": f"127.0.0.1:{free_port()}", **web})
    return site(path).model_copy(update={"web": config})


def test_the_page_is_a_service_only_where_web_is_configured(tmp_path: Path) -> None:
    assert SERVICE_TYPE in SERVICE_TYPES
    plain = site(tmp_path / "edge.db")
    assert SERVICE_TYPE.section(plain) is None and SERVICE_TYPE not in configured(plain)
    paged = with_page(tmp_path / "edge.db")
    assert SERVICE_TYPE in configured(paged)
    assert SERVICE_TYPE.channels(paged) == {}  # it sends nothing


def _post_ack(port: int, alarm_id: str, pin: str) -> tuple[int, str]:
    status, headers, text = raw_request(port, "GET", "/alarms")
    assert status == 200
    token = re.search(r'name="csrf" value="([^"]+)"', text)
    assert token is not None
    cookie = headers["set-cookie"].split(";")[0]
    body = f"csrf={token.group(1)}&alarm_id={alarm_id}&name=keeper&pin={pin}".encode()
    status, _, text = raw_request(port, "POST", "/alarms/ack", body,
                                  {**FORM, "Cookie": cookie})
    return status, text


def test_serves_the_daemon_counts_in_health_and_stops(tmp_path: Path) -> None:
    settings = with_page(tmp_path / "edge.db", pin_hash=hash_pin(PIN), lockout_after=1,
                         lockout_site_after=5)

    async def scenario() -> None:
        async with running(settings) as daemon:
            await daemon.poll("level-1", level(now_ms(), 123.6))
            page = SERVICE_TYPE.build(settings, daemon.ports)
            assert isinstance(page, KeeperPage) and page.name == "web"
            assert page.health()["listening"] is False
            assert page.server is None  # its code loads when it starts
            task = asyncio.create_task(page.run())
            port = page.config.port
            for _ in range(250):
                if page.health()["listening"]:
                    break
                await asyncio.sleep(0.02)

            def exchange() -> None:
                status, _, overview = raw_request(port, "GET", "/")
                assert status == 200 and "坝前水位" in overview and "123.6" in overview
                assert raw_request(port, "GET", "/plot/no/such")[0] == 404
                assert raw_request(port, "GET", "/?period=1y")[0] == 400
                [alarm_id] = re.findall(r'data-alarm="([^"]+)"', raw_request(
                    port, "GET", "/alarms")[2])[:1]
                assert _post_ack(port, alarm_id, "000000")[0] == 429  # wrong, locked out
                assert raw_request(port, "GET", "/devices")[0] == 200

            await asyncio.to_thread(exchange)
            health = page.health()
            assert health["listen"] == page.config.listen
            assert health["listening"] is True and health["kind"] == "web"
            assert health["requests"] == 7 and health["refusals"] == 3
            assert (health["wrong_pins"], health["lockouts"], health["failures"]) == (1, 1, 0)
            await page.stop()
            await asyncio.wait_for(task, 5)
            assert page.health()["listening"] is False
            with socket.socket() as again:  # the address is free again
                again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                again.bind(("127.0.0.1", port))

    asyncio.run(scenario())


def test_a_page_stopped_before_it_ran_never_listens(tmp_path: Path) -> None:
    settings = with_page(tmp_path / "edge.db")

    async def scenario() -> None:
        async with running(settings) as daemon:
            page = SERVICE_TYPE.build(settings, daemon.ports)
            await page.stop()
            await asyncio.wait_for(page.run(), 5)
            assert page.health()["listening"] is False and page.server is None

    asyncio.run(scenario())


def test_edge_hash_pin_prints_a_hash_of_the_pin_from_stdin() -> None:
    env = {"PYTHONPATH": str(REPO)}
    made = subprocess.run([sys.executable, "-m", "edge", "hash-pin"], input="246810\n",
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=30)
    assert made.returncode == 0, made.stderr
    assert verify_pin("246810", parse_pin_hash(made.stdout.strip()))
    short = subprocess.run([sys.executable, "-m", "edge", "hash-pin"], input="123\n",
                           capture_output=True, text=True, cwd=REPO, env=env, timeout=30)
    assert short.returncode == 2 and short.stdout == ""
    assert "at least 6 characters" in short.stderr


def _site_file(tmp_path: Path, web: dict[str, object]) -> Path:
    data = yaml.safe_load((REPO / "config" / "demo.yaml").read_text(encoding="utf-8"))
    data["store"]["path"] = str(tmp_path / "edge.db")
    data["web"] = web
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize(("web", "message"), [
    ({"listen": "0.0.0.0:8080"}, "web.listen"),
    ({"listen": "127.0.0.1:8080", "pin_hash": "246810"}, "web.pin_hash"),
    ({"listen": "127.0.0.1:8080", "lockout_for": "3d"}, "web.lockout_for"),
    ({"port": 8080}, "web.listen"),
])
def test_a_wrong_web_section_is_refused_naming_its_key(tmp_path: Path, web: dict[str, object],
                                                       message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(_site_file(tmp_path, web))
    assert message in str(refused.value)


def test_a_site_file_with_web_loads(tmp_path: Path) -> None:
    loaded = load_config(_site_file(tmp_path, {"listen": "192.168.1.10:8080"}))
    assert loaded.settings.web is not None and loaded.settings.web.language == "zh"
    assert loaded.settings.web.port == 8080


def test_edge_check_says_where_the_page_is_and_whether_it_acknowledges(tmp_path: Path
                                                                        ) -> None:
    read_only = run_edge(["check", "-c", str(_site_file(tmp_path, {
        "listen": "192.168.1.10:8080"}))])
    assert read_only.returncode == 0, read_only.stderr
    assert "keeper's page: http://192.168.1.10:8080/ (read-only: no pin_hash)" in (
        read_only.stdout)
    with_pin = run_edge(["check", "-c", str(_site_file(tmp_path, {
        "listen": "[::1]:8080", "pin_hash": hash_pin(PIN)}))])
    assert "keeper's page: http://[::1]:8080/ (acknowledging with the PIN)" in with_pin.stdout


def test_edge_demo_serves_the_page_and_says_where() -> None:
    demo = subprocess.Popen([sys.executable, "-m", "edge", "demo", "--seconds", "6"],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert demo.stdout is not None
        lines = [demo.stdout.readline() for _ in range(3)]
        found = re.search(r"keeper's page: http://127\.0\.0\.1:(\d+)/  \(the demo's PIN to "
                          r"acknowledge alarms: 246810\)", "".join(lines))
        assert found, lines
        port = int(found.group(1))
        wait_for_port(port, 15)
        status, _, overview = raw_request(port, "GET", "/")
        assert status == 200 and "Demo reservoir" in overview
        assert "Level at the dam" in overview  # the names of config/demo.yaml
        assert demo.wait(30) == 0
    finally:
        demo.kill()
        demo.wait()
