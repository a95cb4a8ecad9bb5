"""The site configuration as the daemon and its tools load it: errors printed as
``FILE:LINE`` lines, and for the daemon (``edge run``, ``check``, ``reload``) its secrets
present in the environment it runs in."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edge.config import ConfigError, LoadedConfig, load_config
from edge.yamlsource import ConfigProblem, load_config_source

# The file systemd reads the daemon's environment from (EnvironmentFile= in the unit).
UNIT_ENV_FILE = "/etc/reservoir-edge/env"

EXIT_CONFIG = 2


def load_or_report(path: str) -> LoadedConfig | None:
    try:
        return load_config(path)
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
    key = ("mqtt", "password_env")
    where = load_config_source(Path(path)).locate(key)
    return [ConfigProblem(where, "mqtt.password_env",
                          f"environment variable {name} is not set; put {name}=<the broker "
                          f"password> in {UNIT_ENV_FILE} (read by systemd at start)")]


def load_for_daemon(path: str) -> LoadedConfig | None:
    """The configuration as ``edge run`` needs it: valid, and its secrets present."""
    loaded = load_or_report(path)
    if loaded is None:
        return None
    problems = environment_problems(loaded, path)
    if not problems:
        return loaded
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(problems)} error(s) in {path}", file=sys.stderr)
    return None
