"""The `cvlab` command. Thin: each command parses arguments, loads the config, calls a plain function in the
core and prints its rows (`common.print_rows`). One module per command group; `common` holds the app, the
error guard and the output rules."""

from __future__ import annotations

import os
import sys

import typer

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
from .common import PipeClosed, app, readable_help


def version_line() -> str:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    try:  # torch's installed version without importing torch (seconds): `cvlab --version` stays instant
        torch_version = version("torch")
    except PackageNotFoundError:
        import torch

        torch_version = torch.__version__
    return f"cvlab {__version__} (torch {torch_version}, python {platform.python_version()})"


def _show_version(value: bool) -> None:
    if value:
        print(version_line())
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version,
                                       help="Print cvlab's version (and torch's, python's) and exit.")):
    """Experiment runner for scene-text and handwriting recognition. One YAML = one experiment."""


def _pipe_aware(command):
    """A closed pipe anywhere below (`cvlab eval RUN | head -1`) becomes PipeClosed, which Typer lets through."""
    invoke = command.invoke

    def invoke_until_the_pipe_closes(ctx):
        try:
            return invoke(ctx)
        except BrokenPipeError:
            raise PipeClosed from None

    command.invoke = invoke_until_the_pipe_closes
    return command


def _silence_closed_pipes() -> None:
    """The standard recipe (Python docs, "Note on SIGPIPE"): point stdout and stderr at /dev/null so that
    nothing written or flushed later, at exit included, raises again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):  # in-process (tests): a stream without a file descriptor
            pass
    os.close(devnull)


def run(argv: list[str]) -> int:
    """Run one command line and return its exit code (what tests and notebooks call). A reader that closes the
    pipe early ends the command quietly with exit 0, as `ls | head` does."""
    import typer.main
    from typer._click.exceptions import ClickException, NoArgsIsHelpError

    command = _pipe_aware(readable_help(typer.main.get_command(app)))
    try:
        try:
            # standalone_mode=False: usage errors come back as exceptions, shown below as one line
            rv = command.main(args=argv, prog_name="cvlab", standalone_mode=False)
            code = rv if isinstance(rv, int) else 0  # an Exit's code, or a command's (None) result
        except NoArgsIsHelpError as e:  # `cvlab` or `cvlab data` alone: the help, as Typer shows it
            print(e.ctx.get_help() if e.ctx else str(e))
            code = 2
        except ClickException as e:  # an unknown option, a bad value, a missing argument: one line, exit 2
            where = f" (see {e.ctx.command_path} --help)" if getattr(e, "ctx", None) else ""
            print(f"error: {e.format_message()}{where}", file=sys.stderr)
            code = e.exit_code
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        sys.stdout.flush()
    except (PipeClosed, BrokenPipeError):
        _silence_closed_pipes()
        return 0
    return code


def main() -> None:
    sys.exit(run(sys.argv[1:]))
