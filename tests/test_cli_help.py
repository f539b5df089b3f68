"""Every `--help` reads as a user would write the command: no Typer type labels (`<list[str]>`, `<bool>`,
`<path>`), no `{run}` usage placeholders."""

import re

import typer.main

from cvlab.cli import app
from cvlab.cli.common import readable_help

TYPE_LABEL = re.compile(r"<(list\[|bool>|path>|str>|int|float|file>|text>)|\{[A-Za-z_.]+\}")


def _commands(cmd, path=()):
    yield path
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_every_help_has_readable_metavars(cli):
    paths = list(_commands(readable_help(typer.main.get_command(app))))
    assert len(paths) > 10 and ("train",) in paths and ("data", "check") in paths
    for path in paths:
        code, out, err = cli(*path, "--help")
        assert code == 0, (path, err)
        assert not TYPE_LABEL.findall(out), (path, TYPE_LABEL.findall(out), out)
        assert "Usage: cvlab" in out
    code, out, _ = cli("eval", "--help")
    assert "KEY=VALUE" in out and "CHECKPOINT" in out
    assert "Usage: cvlab eval [OPTIONS] RUN" in out


def test_root_help_offers_version_and_row_commands_offer_format(cli):
    code, out, _ = cli("--help")
    assert code == 0 and "--version" in out
    for path in (("predict",), ("eval",), ("runs",), ("models", "list")):
        code, out, _ = cli(*path, "--help")
        assert code == 0 and "--format" in out and "table|tsv|json" in out, path
    code, out, _ = cli("runs", "--help")
    assert "</dev/null" in out and "removes nothing" in out  # what `runs clean` does without --yes
