"""The site configuration as the daemon and its tools load it: errors printed as
``FILE:LINE`` lines, and for the daemon (``edge run``, ``check``, ``reload``) its secrets
present in the environment it runs in."""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from edge.config import ConfigError, LoadedConfig, load_config
from edge.configdigest import ENTRY_SECTIONS, entry_key
from edge.configsource import ConfigProblem
from edge.early_stop import raise_if_stop_requested
from edge.heap import give_back_free_memory
from vocab.configbase import share_repeats

log = structlog.get_logger("edge.config")

# The file systemd reads the daemon's environment from (EnvironmentFile= in the unit).
UNIT_ENV_FILE = "/etc/reservoir-edge/env"

EXIT_CONFIG = 2


def load_apart(path: str, meanwhile: Callable[[], object] | None = None) -> LoadedConfig:
    """``load_config`` in a forked child that hands back the result, pickled.

    Parsing and validating a site file makes a peak of short-lived objects (YAML nodes and
    marks, pydantic's intermediate values: 2.6 MiB at 200 devices, 7.8 MiB at 1,000
    points), and the long-lived settings end up scattered over the memory that peak took.
    CPython gives a 1 MiB arena back only when nothing in it lives, so the daemon kept that
    peak for good. Built in a child, the peak dies with it, and the parent holds only the
    unpickled settings, packed together (docs/performance.md).

    Only before any thread exists (forking a threaded process may copy a lock held by
    another thread); otherwise, or where there is no fork, or if the child cannot report
    (killed, out of memory), the configuration is loaded here as before. Errors are the
    same either way: a ``ConfigError`` with every problem.

    ``meanwhile`` runs here while the child works (``edge run`` imports the daemon's
    modules): the models build their validators only when first used, so that work is the
    child's, and on two cores or more it overlaps the parent's imports.
    """
    if not hasattr(os, "fork") or threading.active_count() > 1:
        if meanwhile is not None:
            meanwhile()
        raise_if_stop_requested()
        return load_config(path)
    reading, writing = os.pipe()
    # SIGTERM is held back over the fork until the parent stands in the ``try`` that kills
    # the child: a stop between the two would leave the child behind, holding our stdout.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(reading)
        _report_and_exit(path, writing)
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(writing)
        with os.fdopen(reading, "rb") as pipe:
            if meanwhile is not None:
                meanwhile()
            # A stop whose exception the imports lost would leave us waiting for a child
            # that may wait for ever itself (a config on a FIFO, a hung NFS mount).
            raise_if_stop_requested()
            answer = pipe.read()
    except BaseException:  # a stop during start-up (edge/early_stop.py): no child left
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    os.waitpid(pid, 0)
    try:
        outcome, value = pickle.loads(answer)
    except Exception:  # the child died before it could answer: load here instead
        return load_config(path)
    if outcome == "error":
        raise ConfigError(value)
    assert isinstance(value, LoadedConfig), "the child answers a LoadedConfig or problems"
    return value


# A reload's parse waits this long for its process; a file on a hung mount must not hold
# the reload (and the next one, queued behind its lock) for ever.
RELOAD_LOAD_TIMEOUT_S = 120.0


def load_for_reload(path: str | Path, running: LoadedConfig | None = None) -> LoadedConfig:
    """``load_config`` for a reload: in a process of its own, the result pickled back.

    By the time of a reload the daemon has threads, so ``load_apart``'s fork is unsafe
    (a lock held by another thread would stay held in the child for ever). Parsed here
    instead, the reload built every model's validator and left the parse's peak behind:
    +9.4 MiB of RSS for good after one reload at 200 devices × 1 point, +24.5 MiB at
    200 × 10 (docs/performance.md).
    A fresh interpreter (``python -m edge.daemon_config``) costs the reload a start-up,
    the daemon nothing. If that process cannot answer, the file is loaded here as before.

    Each bus, device, rule and derived point equal to one of ``running`` comes back as
    that running object: the process answers a marker for it (``_Running``) rather than
    a copy, so a reload of a site where one rule changed unpickles one rule. Unpickled in
    full, the 2.4 MiB of a 200 × 10 site's new settings took arenas beside the running
    ones and left them half empty: +3.4 MiB of RSS after every reload. Blocking: call it
    from a worker thread.
    """
    done = None
    kept = pickle.dumps(running.entry_digests if running is not None else {})
    try:
        done = subprocess.run([sys.executable, "-m", "edge.daemon_config", str(path)],
                              input=kept, capture_output=True,
                              timeout=RELOAD_LOAD_TIMEOUT_S, check=False)
        outcome, value = pickle.loads(done.stdout)
    except subprocess.TimeoutExpired:
        raise ConfigError([ConfigProblem(
            None, "", f"{path}: reading the configuration took over "
                      f"{RELOAD_LOAD_TIMEOUT_S:g} s; the running one stays")]) from None
    except Exception as exc:  # no answer (cannot start, killed, out of memory): load here
        log.warning("reload_parsed_in_place", reason=_no_answer(exc, done))
        try:
            return load_config(path)
        finally:
            give_back_free_memory()
    if outcome == "error":
        raise ConfigError(value)
    assert isinstance(value, LoadedConfig), "the child answers a LoadedConfig or problems"
    return value if running is None else _with_running(value, running)


@dataclass(frozen=True, slots=True)
class _Running:
    """In the answer of a reload's process: the running object of this entry goes here."""

    section: str
    key: str  # edge.configdigest.entry_key


def _marked(loaded: LoadedConfig, digests: dict[tuple[str, str], bytes]) -> LoadedConfig:
    """The reload's process: each entry whose digest the daemon's is, as a marker."""
    settings = loaded.settings
    update = {}
    for section in ENTRY_SECTIONS:
        entries: list[Any] = []
        for entry in getattr(settings, section):
            where = (section, entry_key(section, entry))
            same = digests.get(where) == loaded.entry_digests[where]
            entries.append(_Running(*where) if same else entry)
        update[section] = entries
    return dataclasses.replace(loaded, settings=settings.model_copy(update=update))


def _with_running(loaded: LoadedConfig, running: LoadedConfig) -> LoadedConfig:
    """The daemon: each marker replaced by the running object it names."""
    settings = loaded.settings
    objects = {(section, entry_key(section, entry)): entry for section in ENTRY_SECTIONS
               for entry in getattr(running.settings, section)}
    update = {section: [objects[(entry.section, entry.key)] if isinstance(entry, _Running)
                        else entry for entry in getattr(settings, section)]
              for section in ENTRY_SECTIONS}
    return dataclasses.replace(loaded, settings=settings.model_copy(update=update))


def _no_answer(exc: Exception, done: subprocess.CompletedProcess[bytes] | None) -> str:
    if done is None:
        return f"cannot start {sys.executable}: {exc}"
    said = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return f"exit status {done.returncode}" + (f": {said[-1]}" if said else "")


def _report_and_exit(path: str, pipe_fd: int,
                     running: dict[tuple[str, str], bytes] | None = None) -> None:
    status = 0
    try:
        try:
            loaded = load_config(path)
            # Pickled shared, unpickled shared: 1.5 MiB less at 200 devices × 10 points.
            share_repeats(loaded.settings)
            if running:
                loaded = _marked(loaded, running)
            answer = pickle.dumps(("ok", loaded))
        except ConfigError as exc:
            answer = pickle.dumps(("error", exc.problems))
        with os.fdopen(pipe_fd, "wb") as pipe:
            pipe.write(answer)
    except BaseException:  # an unexpected failure: the parent loads the config itself
        status = 1
    finally:
        os._exit(status)


def load_or_report(path: str,
                   meanwhile: Callable[[], object] | None = None) -> LoadedConfig | None:
    try:
        return load_apart(path, meanwhile)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} error(s) in {path}", file=sys.stderr)
        return None


def environment_problems(loaded: LoadedConfig, path: str) -> list[ConfigProblem]:
    """Variables the configuration names that are not set in this process's environment.

    ``edge check`` runs as the unit's ExecStartPre/ExecReload with the unit's environment, so
    what is missing here is missing for the daemon too; ``load_config`` cannot check this
    itself because ``edge status``/``export`` are run by hand without the service's secrets.
    """
    name = loaded.settings.mqtt.password_env
    if name is None or name in os.environ:
        return []
    from edge.yamlsource import load_config_source

    key = ("mqtt", "password_env")
    where = load_config_source(Path(path)).locate(key)
    return [ConfigProblem(where, "mqtt.password_env",
                          f"environment variable {name} is not set; put {name}=<the broker "
                          f"password> in {UNIT_ENV_FILE} (read by systemd at start)")]


def load_for_daemon(path: str,
                    meanwhile: Callable[[], object] | None = None) -> LoadedConfig | None:
    """The configuration as ``edge run`` needs it: valid, and its secrets present."""
    loaded = load_or_report(path, meanwhile)
    if loaded is None:
        return None
    problems = environment_problems(loaded, path)
    if not problems:
        return loaded
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(problems)} error(s) in {path}", file=sys.stderr)
    return None


if __name__ == "__main__":  # load_for_reload's process: the answer goes to stdout, pickled
    # Through the module by its name: a marker pickled as ``__main__._Running`` could not
    # be unpickled by the daemon.
    from edge import daemon_config

    given = sys.stdin.buffer.read()  # the running entries' digests, pickled
    # The answer keeps the real stdout to itself; anything printed while loading (a
    # logger not configured here prints to stdout) goes to stderr, not into the pickle.
    answer_fd = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    daemon_config._report_and_exit(sys.argv[1], answer_fd,
                                   pickle.loads(given) if given else None)
