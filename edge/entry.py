"""The ``edge`` console script: stop signals are handled before anything heavy is imported
(why, and what a stop during start-up does: edge/early_stop.py)."""

from __future__ import annotations

import os
import sys

from edge.early_stop import install_stop_handler


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
