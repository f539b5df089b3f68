"""The `cvlab` command. Thin: each command parses arguments, loads the config, calls a plain function in the
core and prints a rich table. One module per command group; `common` holds the app and the error guard."""

from __future__ import annotations

import sys

from . import (
    augment,  # noqa: F401  (registers augment preview)
    compare,  # noqa: F401  (registers compare-norms)
    core,  # noqa: F401  (registers train, eval, config)
    data,  # noqa: F401  (registers data check, data convert, data preview)
    export,  # noqa: F401  (registers export)
    imports,  # noqa: F401  (registers import dtrb)
    lm,  # noqa: F401  (registers lm build)
    models,  # noqa: F401  (registers models list, models show)
    predict,  # noqa: F401  (registers predict)
    runs,  # noqa: F401  (registers runs, runs clean)
)
from .common import app, readable_help


def run(argv: list[str]) -> int:
    """Run one command line and return its exit code (what tests and notebooks call)."""
    import typer.main

    try:
        readable_help(typer.main.get_command(app))(args=argv, prog_name="cvlab")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def main() -> None:
    sys.exit(run(sys.argv[1:]))
