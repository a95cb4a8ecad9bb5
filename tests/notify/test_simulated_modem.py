"""The simulated modem's own dialogue, spoken to raw over its pty as any AT client would.

(Gammu 1.42 was run against it by hand: it identifies the modem, lists the stored texts and
sends UCS2, concatenated and GSM 7-bit texts through it. These tests keep that behaviour.)
"""

from __future__ import annotations

import os
import re
import select
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drivers.smspdu import encode_submit
from simulator.modem import ModemFault, SimulatedModem


class RawClient:
    """Writes command lines and reads the modem's answer up to a final result code."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)

    def close(self) -> None:
        os.close(self.fd)

    def say(self, data: str | bytes, until: str = r"\r\n(OK|ERROR|\+CM[ES] ERROR: \d+)\r\n",
            timeout: float = 2.0) -> str:
        os.write(self.fd, data.encode("ascii") if isinstance(data, str) else data)
        return self.read(until, timeout)

    def read(self, until: str, timeout: float = 2.0) -> str:
        got = b""
        deadline = time.monotonic() + timeout
        while not re.search(until, got.decode("ascii", "replace")):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {until!r} in {got!r}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                got += os.read(self.fd, 4096)
        return got.decode("ascii", "replace")


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[tuple[SimulatedModem, RawClient]]:
    link = tmp_path / "ttyModem"
    with SimulatedModem(link) as sim:
        client = RawClient(link)
        try:
            yield sim, client
        finally:
            client.close()


def test_echo_until_ate0_and_identification(modem: tuple[SimulatedModem, RawClient]) -> None:
    _, client = modem
    assert client.say("AT\r") == "AT\r\r\nOK\r\n"
    assert client.say("ATE0\r") == "ATE0\r\r\nOK\r\n"
    assert client.say("AT\r") == "\r\nOK\r\n"
    assert client.say("AT+CGMM\r") == "\r\nSIMULATED-LTE\r\n\r\nOK\r\n"
    assert client.say("AT+CSCS=?\r") == '\r\n+CSCS: ("GSM","IRA","UCS2")\r\n\r\nOK\r\n'
    assert client.say("AT+CPMS?\r") == '\r\n+CPMS: "SM",0,30,"SM",0,30,"SM",0,30\r\n\r\nOK\r\n'
    assert client.say("AT+CPMS=\"ME\"\r") == "\r\n+CMS ERROR: 302\r\n"
    assert client.say("AT+NONSENSE\r") == "\r\nERROR\r\n"
    assert client.say("AT+CMGF=1\r") == "\r\n+CMS ERROR: 303\r\n"  # PDU mode only
    assert client.say("AT+CMEE=1\r") == "\r\nOK\r\n"
    assert client.say("AT+CMEE=7\r") == "\r\n+CME ERROR: 3\r\n"


def test_send_checks_the_length_and_esc_cancels(modem: tuple[SimulatedModem, RawClient]) -> None:
    sim, client = modem
    client.say("ATE0\r")
    part = encode_submit("+8613800138000", "水位超限", 1).parts[0]
    assert client.say(f"AT+CMGS={part.tpdu_length + 1}\r", until="> ").endswith("\r\n> ")
    assert client.say(part.hex + "\x1a") == "\r\n+CMS ERROR: 304\r\n"  # promised one more
    client.say(f"AT+CMGS={part.tpdu_length}\r", until="> ")
    os.write(client.fd, part.hex[:10].encode() + b"\x1b")  # changed its mind
    assert client.say("AT\r") == "\r\nOK\r\n"
    assert sim.cancelled_sends == 1 and sim.sent == []
    client.say(f"AT+CMGS={part.tpdu_length}\r", until="> ")
    assert client.say(part.hex + "\x1a") == "\r\n+CMGS: 0\r\n\r\nOK\r\n"
    assert [(t.destination, t.text) for t in sim.sent] == [("+8613800138000", "水位超限")]
    assert client.say("AT+CMGS=3\r") == "\r\n+CMS ERROR: 304\r\n"
    client.say(f"AT+CMGS={part.tpdu_length}\r", until="> ")
    assert client.say("ZZ\x1a") == "\r\n+CMS ERROR: 304\r\n"


def test_store_read_list_delete_and_faults(modem: tuple[SimulatedModem, RawClient]) -> None:
    sim, client = modem
    client.say("ATE0\r")
    client.say("AT+CMEE=1\r")
    assert client.say("AT+CNMI=2,1,0,0,0\r") == "\r\nOK\r\n"
    (index,) = sim.deliver("+8613912345678", "1", datetime(2026, 7, 1, tzinfo=UTC))
    assert client.read(r'\+CMTI: "SM",1\r\n') == '\r\n+CMTI: "SM",1\r\n'
    answer = client.say(f"AT+CMGR={index}\r")
    assert answer.startswith("\r\n+CMGR: 0,,") and sim.stored()[index].stat == 1
    assert client.say("AT+CMGL=0\r") == "\r\nOK\r\n"  # nothing unread any more
    assert client.say("AT+CMGL=4\r").startswith(f"\r\n+CMGL: {index},1,,")
    assert client.say(f"AT+CMGD={index}\r") == "\r\nOK\r\n" and not sim.stored()
    assert client.say(f"AT+CMGR={index}\r") == "\r\n+CMS ERROR: 321\r\n"
    assert client.say("AT+CREG=1\r") == "\r\nOK\r\n"
    sim.set_fault(ModemFault.NOT_REGISTERED)
    assert client.read(r"\+CREG: 2\r\n") == "\r\n+CREG: 2\r\n"
    assert client.say("AT+CREG?\r") == "\r\n+CREG: 1,2\r\n\r\nOK\r\n"
    sim.set_fault(ModemFault.NO_SIM)
    assert client.say("AT+CPIN?\r") == "\r\n+CME ERROR: 10\r\n"
    assert client.say("AT+CMGL=4\r") == "\r\n+CMS ERROR: 310\r\n"
    sim.clear_faults()
    sim.set_fault(ModemFault.SILENT)
    with pytest.raises(AssertionError, match="no "):
        client.say("AT\r", timeout=0.2)
    sim.clear_faults()
    assert client.say("AT\r") == "\r\nOK\r\n"
    with pytest.raises(RuntimeError, match=r"storage full \(30\)"):
        for _ in range(31):
            sim.deliver("+8613912345678", "x")
