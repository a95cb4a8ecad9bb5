"""A stop asked for before the gateway's event loop runs: SIGTERM during start-up.

``edge.cli`` pulls in pydantic, PyYAML and the config models, and ``edge run`` then imports
pymodbus, paho and (for an HST rule) numpy: on a Pi that is a second or more during which
systemd may already send SIGTERM (``systemctl stop`` or a restart while the unit is
"activating"). Python's default disposition would let the signal kill the process, which
systemd logs as a failure by signal, and nothing would close what was half opened. The
handler installed here, first thing in ``edge/entry.py``, turns such a signal into an
ordinary ``SystemExit`` that unwinds through ``finally`` blocks and exits 0. Once the
gateway's event loop runs it installs its own handlers (``loop.add_signal_handler``) for the
orderly shutdown.

The exception alone is not enough: CPython runs a signal handler wherever the main thread
next checks for signals, and where that is inside the compiler (a module imported for the
first time, with no ``.pyc`` yet) the ``SystemExit`` can be lost and the import goes on as
if nothing happened. The CI saw exactly that: the line below was printed and ``edge run``
then waited for ever for its config. So the handler also records the stop, and the two
places that wait after the risky imports ask ``stop_requested()`` before they wait: the
config load (edge/daemon_config.py) and the gateway as it takes over the signals.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

# Exit status for a stop requested before start-up completed: nothing failed, the service
# manager (or a technician's Ctrl-C) asked for it.
EXIT_STOPPED = 0

_requested: list[str] = []


def _stop_during_start_up(signum: int, frame: FrameType | None) -> None:
    name = signal.Signals(signum).name
    if not _requested:
        # One line for the journal, then unwind; a traceback would read like a crash.
        print(f"edge: {name} during start-up, exiting", file=sys.stderr, flush=True)
    _requested.append(name)
    raise SystemExit(EXIT_STOPPED)


def install_stop_handler() -> None:
    """Make SIGTERM end start-up cleanly instead of killing the process.

    SIGINT keeps Python's own handler: it already raises KeyboardInterrupt, which unwinds the
    same way, and ``asyncio.run`` only turns Ctrl-C into a clean cancellation of its main task
    (``edge simulate``, ``edge demo``) while that default handler is in place.
    """
    signal.signal(signal.SIGTERM, _stop_during_start_up)


def stop_requested() -> bool:
    """Whether a stop signal came during start-up, even one whose exception was lost."""
    return bool(_requested)


def raise_if_stop_requested() -> None:
    """Raise the ``SystemExit`` of a stop whose exception was lost, before a long wait."""
    if _requested:
        raise SystemExit(EXIT_STOPPED)
