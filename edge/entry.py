"""The ``edge`` console script: stop signals are handled before anything heavy is imported.

``edge.cli`` pulls in pydantic, PyYAML and the config models, and ``edge run`` then imports
pymodbus, paho and (for an HST rule) numpy: on a Pi that is a second or more during which
systemd may already send SIGTERM (``systemctl stop`` or a restart while the unit is
"activating"). Python's default disposition would let the signal kill the process, which
systemd logs as a failure by signal, and nothing would close what was half opened. Installing
the handler here, first, turns such a signal into an ordinary ``SystemExit`` that unwinds
through ``finally`` blocks and exits 0. Once the gateway's event loop runs it installs its own
handlers (``loop.add_signal_handler``) for the orderly shutdown.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

# Exit status for a stop requested before start-up completed: nothing failed, the service
# manager (or a technician's Ctrl-C) asked for it.
EXIT_STOPPED = 0


def _stop_during_start_up(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    # One line for the journal, then unwind; a traceback would read like a crash.
    print(f"edge: {name} during start-up, exiting", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_STOPPED)


def install_stop_handler() -> None:
    """Make SIGTERM end start-up cleanly instead of killing the process.

    SIGINT keeps Python's own handler: it already raises KeyboardInterrupt, which unwinds the
    same way, and ``asyncio.run`` only turns Ctrl-C into a clean cancellation of its main task
    (``edge simulate``, ``edge demo``) while that default handler is in place.
    """
    signal.signal(signal.SIGTERM, _stop_during_start_up)


def main(argv: list[str] | None = None) -> int:
    install_stop_handler()
    # Pydantic looks for plugins in every installed distribution's entry points the first
    # time a model is built (a scan of the metadata of the whole environment, ~12 ms and
    # its memory at start-up); the gateway uses none. A user's own setting is kept.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")
    from edge.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
