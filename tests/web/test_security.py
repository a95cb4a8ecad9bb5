"""The PIN, its hash and `edge hash-pin`, the lock-out, the web: config section, i18n."""

from __future__ import annotations

import io
import os
import re
import select
import subprocess
import sys
import time
from string import Formatter

import pytest
from pydantic import ValidationError

from edge.web.config import WebConfig
from edge.web.hashpin import run as hash_pin_cli
from edge.web.i18n import TEXTS
from edge.web.pin import hash_pin, parse_pin_hash, verify_pin

PIN = "246810"


def test_hash_is_salted_self_describing_and_verifies() -> None:
    first, second = hash_pin(PIN), hash_pin(PIN)
    assert first != second  # a random salt each time
    assert re.fullmatch(r"\$scrypt\$ln=14,r=8,p=1\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+", first)
    stored = parse_pin_hash(first)
    assert verify_pin(PIN, stored)
    assert not verify_pin("246811", stored)
    assert not verify_pin("", stored)
    assert not verify_pin("9" * 65, stored)
    assert PIN not in first


@pytest.mark.parametrize(("text", "message"), [
    ("246810", "not a PIN hash"),
    ("$scrypt$ln=30,r=8,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "outside 10..20"),
    ("$scrypt$ln=20,r=16,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "more than 64 MiB"),
    ("$scrypt$ln=14,r=8,p=1$c2Fs$aGFzaGhhc2hoYXNoaGFzaA", "salt is shorter"),
    ("$scrypt$ln=14,r=8,p=1$c2FsdHNhbHQ$aGFzaA", "shorter than 16 bytes"),
    ("$scrypt$ln=14,r=8,p=1$c2FsdHNhbHQ$a", "invalid base64"),
])
def test_bad_hashes_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_pin_hash(text)


@pytest.mark.parametrize(("pin", "message"), [
    ("12345", "at least 6"), ("1" * 65, "at most 64"), (" 123456", "spaces"),
    ("123\x00456", "control"),
])
def test_weak_or_odd_pins_refused(pin: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        hash_pin(pin)


def test_hash_pin_reads_once_from_a_pipe() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert hash_pin_cli(io.StringIO(f"{PIN}\n"), out, err, interactive=False) == 0
    assert verify_pin(PIN, parse_pin_hash(out.getvalue().strip()))
    assert err.getvalue() == ""
    out, err = io.StringIO(), io.StringIO()
    assert hash_pin_cli(io.StringIO("123\n"), out, err, interactive=False) == 2
    assert out.getvalue() == "" and "at least 6" in err.getvalue()


def _talk(fd: int, wait_for: str, send: str | None, deadline: float) -> str:
    seen = ""
    while wait_for not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise TimeoutError(f"no {wait_for!r} from edge hash-pin; got {seen!r}")
        seen += os.read(fd, 1024).decode(errors="replace")
    if send is not None:
        os.write(fd, send.encode())
    return seen


@pytest.mark.parametrize(("second", "code"), [(PIN, 0), ("999999", 2)])
def test_hash_pin_asks_twice_on_a_terminal(second: str, code: int) -> None:
    """A real pseudo-terminal: the PIN is asked twice, without echo."""
    controller, terminal = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "edge.web.hashpin"], stdin=terminal,
                            stdout=subprocess.PIPE, stderr=terminal, start_new_session=True)
    os.close(terminal)
    try:
        deadline = time.monotonic() + 15
        _talk(controller, "PIN (6-64 characters): ", f"{PIN}\n", deadline)
        echoed = _talk(controller, "PIN again: ", f"{second}\n", deadline)
        assert PIN not in echoed  # no echo
        stdout, _ = proc.communicate(timeout=15)
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code
    if code == 0:
        assert verify_pin(PIN, parse_pin_hash(stdout.decode().strip()))
    else:
        assert stdout == b""


def test_web_config_contract_and_defaults() -> None:
    pin = hash_pin(PIN)
    config = WebConfig.model_validate({"listen": "127.0.0.1:8080", "language": "zh",
                                       "pin_hash": pin})
    assert (config.host, config.port, config.language) == ("127.0.0.1", 8080, "zh")
    assert config.pin is not None and verify_pin(PIN, config.pin)
    assert (config.lockout_after, config.lockout_for, config.lockout_site_after) == \
        (5, 900.0, 20)
    lan = WebConfig.model_validate({"listen": "192.168.1.10:80", "lockout_for": "30min"})
    assert (lan.host, lan.port, lan.language, lan.pin, lan.lockout_for) == \
        ("192.168.1.10", 80, "zh", None, 1800.0)
    assert WebConfig.model_validate({"listen": "[::1]:8080"}).host == "::1"


@pytest.mark.parametrize(("raw", "message"), [
    ({"listen": "0.0.0.0:8080"}, "all interfaces"),
    ({"listen": "[::]:8080"}, "all interfaces"),
    ({"listen": "localhost:8080"}, "not an IP address"),
    ({"listen": "127.0.0.1"}, "not host:port"),
    ({"listen": "127.0.0.1:0"}, "port must be a number 1-65535"),
    ({"listen": "127.0.0.1:70000"}, "port must be a number 1-65535"),
    ({"listen": "224.0.0.1:8080"}, "multicast"),
    ({"listen": "127.0.0.1:8080", "language": "fr"}, "language"),
    ({"listen": "127.0.0.1:8080", "pin_hash": "123456"}, "not a PIN hash"),
    ({"listen": "127.0.0.1:8080", "lockout_for": "2d"}, "at most 1 day"),
    ({"listen": "127.0.0.1:8080", "lockout_after": 0}, "lockout_after"),
    ({"listen": "127.0.0.1:8080", "lockout_after": 10, "lockout_site_after": 5},
     "below lockout_after"),
    ({"listen": "127.0.0.1:8080", "pin": "123456"}, "Extra inputs are not permitted"),
])
def test_web_config_errors_name_the_problem(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WebConfig.model_validate(raw)


def test_every_text_in_both_languages_with_the_same_placeholders() -> None:
    for key, (zh, en) in TEXTS.items():
        assert zh and en, key
        names = [{f for _, f, _, _ in Formatter().parse(t) if f} for t in (zh, en)]
        assert names[0] == names[1], key
