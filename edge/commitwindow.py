"""The store's commit window, chosen from the site's shape when the site does not choose.

Every commit is fsynced (``store.synchronous: full``), and a fsync writes at least the
WAL's last 4 KiB page again: in the steady state a commit of one round costs the card
6–8 KB however few readings it holds (docs/performance.md, "The reservoir's shape"). A
site of many readings a round spreads that thinly; a small site polled fast does not
(10 devices of 10 registers every second: 77–80 B a datapoint with a commit a round). So
the automatic window gathers rounds of the fastest devices until a commit holds about
``AUTO_COMMIT_DATAPOINTS``, but never for longer than ``AUTO_MAX_WINDOW_MS``, its last
round's wait included: telemetry waits up to that before it is published. Alarms never
wait for any window (edge/pipeline.py), and the keeper's page and the commands read the
newest readings as the rules see them, before their commit.

A site that polls slowly (a round every few seconds or more) keeps one round a commit,
committed within a quarter second of its last poll. A site that chooses
``store.commit_window_ms`` gets exactly that, up to 10 s (a slow RTU line of few
readings a second reaches 50 B a datapoint only so, see docs/performance.md).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the settings' model imports this module's bounds
    from edge.config import GatewaySettings

# The longest commit window a site may choose (``store.commit_window_ms``): telemetry
# waits up to it before it is published, and a crash loses what it held uncommitted.
MAX_COMMIT_WINDOW_MS = 10_000.0
# One round's window when the site does not choose: the round's polls complete within it
# (their devices are due at one boundary, drivers/bustask.py), at most a quarter of the
# fastest poll so that the commit is done long before the next round.
AUTO_COMMIT_WINDOW_MS = 250.0
# An automatic window takes rounds until a commit holds this many datapoints: at 8–9 KB
# a commit in the steady state that is under 30 B a datapoint; 200 (two rounds of 10 ×
# 10) measured 38.5–50.7 B a datapoint, too close to issue 19's 50 (docs/performance.md).
AUTO_COMMIT_DATAPOINTS = 300
# ... but takes no longer than this, however few datapoints the site polls a second.
AUTO_MAX_WINDOW_MS = 3000.0
# The longest a commit window waits for a bus's round to finish (edge/pipeline.py),
# past the window itself when that is several rounds long.
MAX_ROUND_WAIT_MS = 2000.0


def _fastest_s(settings: GatewaySettings) -> float | None:
    return min((d.poll_interval_s for d in settings.devices), default=None)


def datapoints_per_s(settings: GatewaySettings) -> float:
    """The readings the site's devices are configured to give a second."""
    return sum(len(d.points) / d.poll_interval_s for d in settings.devices)


def rounds_per_commit(settings: GatewaySettings) -> int:
    """How many rounds of the fastest devices the commit window takes: with the window
    unset, enough for ``AUTO_COMMIT_DATAPOINTS`` as far as ``AUTO_MAX_WINDOW_MS`` allows;
    one when the site chose its window or polls too slowly for two to fit."""
    fastest = _fastest_s(settings)
    if fastest is None or settings.store.commit_window_ms is not None:
        return 1
    wanted = math.ceil(AUTO_COMMIT_DATAPOINTS / (datapoints_per_s(settings) * fastest))
    # A window of k rounds closes half a poll after the k-th round began, and waits for
    # that round a quarter of a poll more at most (below): (k - 1/4) polls in all.
    fit = math.floor(AUTO_MAX_WINDOW_MS / (fastest * 1000) + 0.25)
    return max(1, min(wanted, fit))


def commit_window_ms(settings: GatewaySettings) -> float:
    """``store.commit_window_ms``, or the automatic window when it is unset."""
    chosen = settings.store.commit_window_ms
    if chosen is not None:
        return chosen
    fastest = _fastest_s(settings)
    if fastest is None:
        return AUTO_COMMIT_WINDOW_MS
    rounds = rounds_per_commit(settings)
    if rounds > 1:
        # Half a poll after the last round began: after it ended (a round takes less than
        # its interval), before the next one begins.
        return (rounds - 0.5) * fastest * 1000
    return min(AUTO_COMMIT_WINDOW_MS, fastest * 1000 / 4)


def round_wait_ms(settings: GatewaySettings) -> float:
    """How long a commit window may stay open for a bus's round to finish (its devices
    due at one boundary, drivers/bustask.py), counted from the window's start: 3/4 of the
    fastest poll interval, at most ``MAX_ROUND_WAIT_MS``, so that the round's commit is
    done before the next round begins; a window of several rounds, a quarter of a poll
    past its end (at most ``MAX_ROUND_WAIT_MS``), which is still before the next round
    begins. 0 (never) when group commit is off (``commit_window_ms`` 0) or there are no
    devices."""
    fastest = _fastest_s(settings)
    window = commit_window_ms(settings)
    if fastest is None or window == 0:
        return 0.0
    if window >= fastest * 1000:
        return window + min(MAX_ROUND_WAIT_MS, fastest * 1000 / 4)
    return min(MAX_ROUND_WAIT_MS, fastest * 1000 * 3 / 4)
