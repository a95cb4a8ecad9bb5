"""``edge hash-pin``: make the ``web.pin_hash`` of a site file from the keeper's PIN.

On a terminal the PIN is asked twice without echo (getpass); from a pipe it is read once
from standard input (``printf '%s\\n' "$PIN" | edge hash-pin``), so an installer can
script it without the PIN ever appearing in a command line or the shell's history. Only
the hash is printed; paste it into the site file as ``pin_hash: "<hash>"``.
"""

from __future__ import annotations

import getpass
import sys
from typing import TextIO

from edge.web.pin import MAX_PIN_LENGTH, MIN_PIN_LENGTH, check_pin_policy, hash_pin

__all__ = ["main", "run"]

EXIT_OK = 0
EXIT_BAD_PIN = 2


def _read_pin(stdin: TextIO, stderr: TextIO, interactive: bool) -> str | None:
    if interactive:
        first = getpass.getpass(f"PIN ({MIN_PIN_LENGTH}-{MAX_PIN_LENGTH} characters): ",
                                stream=stderr)
        second = getpass.getpass("PIN again: ", stream=stderr)
        if first != second:
            print("edge hash-pin: the two PINs differ; nothing printed", file=stderr)
            return None
        return first
    line = stdin.readline(MAX_PIN_LENGTH * 4 + 2)
    return line.rstrip("\r\n")


def run(stdin: TextIO, stdout: TextIO, stderr: TextIO, interactive: bool | None = None) -> int:
    """Read the PIN, print its hash; the exit code says whether it worked."""
    if interactive is None:
        interactive = stdin.isatty()
    pin = _read_pin(stdin, stderr, interactive)
    if pin is None:
        return EXIT_BAD_PIN
    try:
        check_pin_policy(pin)
    except ValueError as exc:
        print(f"edge hash-pin: {exc}; nothing printed", file=stderr)
        return EXIT_BAD_PIN
    print(hash_pin(pin), file=stdout)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:
        print("usage: edge hash-pin  (reads the PIN from the terminal, or once from stdin)",
              file=sys.stderr)
        return EXIT_BAD_PIN
    return run(sys.stdin, sys.stdout, sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
