"""The keeper's PIN: stored only as a salted scrypt hash, checked in constant time.

The hash is written in the PHC string format that password libraries share
(``$scrypt$ln=14,r=8,p=1$<salt>$<hash>``, standard base64 without padding), so the cost
parameters travel with the hash and can be raised later without breaking old configs.

Cost: ln=14, r=8, p=1 needs 16 MiB and about 40-100 ms per check on a Pi-class CPU. A PIN
is a small secret, so the real defence is the page's lock-out after a few failures
(``app.PinGuard``); the hash keeps a copied config file from giving the PIN away at once.
scrypt is CPU and memory bound: the page runs it on a thread of its own, never on the
event loop (``verify_pin_async``).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

__all__ = [
    "MAX_PIN_LENGTH",
    "MIN_PIN_LENGTH",
    "PinHash",
    "check_pin_policy",
    "hash_pin",
    "parse_pin_hash",
    "verify_pin",
    "verify_pin_async",
]

MIN_PIN_LENGTH = 6
MAX_PIN_LENGTH = 64
DEFAULT_LOG_N = 14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
# A config could ask for any cost; these bounds keep a check under ~64 MiB and seconds.
MAX_MEMORY = 64 * 1024 * 1024

_PHC = re.compile(r"^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+)"
                  r"\$([A-Za-z0-9+/]+)$")
FORMAT_HELP = "expected '$scrypt$ln=14,r=8,p=1$<salt>$<hash>' as printed by `edge hash-pin`"


@dataclass(frozen=True, slots=True)
class PinHash:
    log_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def encode(self) -> str:
        return (f"$scrypt$ln={self.log_n},r={self.r},p={self.p}${_b64(self.salt)}"
                f"${_b64(self.digest)}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _memory(log_n: int, r: int) -> int:
    return 128 * r * (1 << log_n)


def parse_pin_hash(text: str) -> PinHash:
    """The parts of a stored hash; ValueError naming what is wrong."""
    match = _PHC.match(text.strip())
    if match is None:
        raise ValueError(f"not a PIN hash: {FORMAT_HELP}")
    log_n, r, p = (int(match.group(i)) for i in (1, 2, 3))
    if not 10 <= log_n <= 20:
        raise ValueError(f"PIN hash cost ln={log_n} is outside 10..20")
    if not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError(f"PIN hash parameters r={r}, p={p} are outside r 1..32, p 1..16")
    if _memory(log_n, r) > MAX_MEMORY:
        raise ValueError(f"PIN hash ln={log_n}, r={r} needs more than "
                         f"{MAX_MEMORY // 2**20} MiB per check")
    try:
        salt, digest = _unb64(match.group(4)), _unb64(match.group(5))
    except ValueError:
        raise ValueError(f"PIN hash has invalid base64: {FORMAT_HELP}") from None
    if len(salt) < 8:
        raise ValueError("PIN hash salt is shorter than 8 bytes")
    if len(digest) < 16:
        raise ValueError("PIN hash is shorter than 16 bytes")
    return PinHash(log_n, r, p, salt, digest)


def check_pin_policy(pin: str) -> None:
    """ValueError unless the PIN is long enough and printable."""
    if len(pin) < MIN_PIN_LENGTH:
        raise ValueError(f"a PIN needs at least {MIN_PIN_LENGTH} characters")
    if len(pin) > MAX_PIN_LENGTH:
        raise ValueError(f"a PIN has at most {MAX_PIN_LENGTH} characters")
    if not pin.isprintable() or pin != pin.strip():
        raise ValueError("a PIN may not hold control characters or leading/trailing spaces")


def _scrypt(pin: str, salt: bytes, log_n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=1 << log_n, r=r, p=p,
                          maxmem=_memory(log_n, r) * 2 + 1024 * 1024, dklen=length)


def hash_pin(pin: str, *, log_n: int = DEFAULT_LOG_N, r: int = DEFAULT_R,
             p: int = DEFAULT_P) -> str:
    """A new hash of the PIN with a random salt (blocking: call it off the event loop)."""
    check_pin_policy(pin)
    salt = secrets.token_bytes(SALT_BYTES)
    return PinHash(log_n, r, p, salt, _scrypt(pin, salt, log_n, r, p, HASH_BYTES)).encode()


def verify_pin(pin: str, stored: PinHash) -> bool:
    """Whether the PIN matches; constant time in the PIN's content (blocking)."""
    if not pin or len(pin) > MAX_PIN_LENGTH:
        return False
    candidate = _scrypt(pin, stored.salt, stored.log_n, stored.r, stored.p, len(stored.digest))
    return hmac.compare_digest(candidate, stored.digest)


async def verify_pin_async(pin: str, stored: PinHash,
                           executor: concurrent.futures.Executor | None = None) -> bool:
    """verify_pin on a worker thread: the event loop keeps polling meanwhile."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, verify_pin, pin, stored)
