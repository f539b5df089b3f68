"""Output that pipes (issue 22): a table on a terminal, tab-separated lines (or json) into a pipe or file, `--out -`,
a closed pipe ends a command quietly (exit 0), `~` expanded in every path option, `--version`, and the messages a
user reads: plurals, a pasteable TensorBoard command, '\\n' line endings, no rates for a dataset with nothing scored.

Pipes are real: `python -m cvlab ...` in a subprocess, its stdout a pipe (or a pseudo-terminal)."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ANSI, tiny_experiment
from data_fixtures import png, truncated_jpeg

LONG = "a folder name long enough that any table column would have to wrap it"


def _cvlab(*args, close_stdout: bool = False) -> tuple[int, str, str]:
    """`python -m cvlab ARGS` with stdout a real pipe; `close_stdout`: its reader is gone before it writes
    (what `cvlab ... | head -1` looks like to the writer, without the race)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "80"}
    proc = subprocess.Popen([sys.executable, "-m", "cvlab", *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if close_stdout:
        proc.stdout.close()
        err = proc.stderr.read()
        return proc.wait(timeout=300), "", err.decode()
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from cvlab.cli import run as cli_run

    root = tmp_path_factory.mktemp("output")
    exp = root / "exp.yaml"
    exp.write_text(yaml.safe_dump(tiny_experiment(train={"steps": 2, "eval_every": 2, "batch_size": 4, "threads": 1},
                                                  log={"tensorboard": False, "image_grid": 0})))
    assert cli_run(["train", str(exp), "--runs-dir", str(root / "runs"), "--name", "p"]) == 0
    (run_dir,) = (root / "runs" / "p").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    """IAM-like word crops below a long path (longer than any terminal's table column), and a broken one."""
    root = tmp_path_factory.mktemp("words") / LONG / LONG
    for name in ("a01-122-05-06.png", "a01-122-05-07.png", "b02-001-00-00.png"):
        png(root / name, 30, 10)
    truncated_jpeg(root / "broken.jpg")
    return root


# ------------------------------------------------------------------------------- the one format decision


def test_predict_into_a_pipe_is_one_tab_separated_line_per_image_whatever_the_path_length(run, words):
    code, out, err = _cvlab("predict", run, words)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split("\t") == ["image", "text", "confidence %"]
    hits = [line for line in lines if "a01-122-05-06.png" in line]  # what `| grep a01-122-05-06.png` finds
    assert len(hits) == 1 and hits[0].split("\t")[0] == str(words / "a01-122-05-06.png")
    assert len(lines) == 1 + 4 and all(len(line.split("\t")) == 3 for line in lines)
    broken = next(line for line in lines if line.startswith(str(words / "broken.jpg")))
    assert "(unreadable:" in broken and broken.split("\t")[2] == ""
    assert "4 images" in err and "1 image could not be read" in err  # the title and the note: stderr


def test_a_terminal_gets_the_table():
    import pty

    master, slave = pty.openpty()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100"}
    env.pop("FORCE_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "cvlab", "models", "list"], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=subprocess.PIPE, env=env)
    os.close(slave)
    chunks = []
    while True:  # read while it writes: a terminal's buffer is small
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the terminal's other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    shown = ANSI.sub("", b"".join(chunks).decode())
    assert "backbones (model.backbone.name)" in shown and "┃ name" in shown and "\t" not in shown


def test_format_option_json_tsv_table_and_a_bad_one(run, words, cli):
    code, out, err = cli("predict", run, words / "a01-122-05-06.png", "--format", "json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["id"] == str(words / "a01-122-05-06.png") and 0 <= row["confidence"] <= 1
    code, out, _ = cli("predict", run, words / "a01-122-05-06.png", "--format", "table")
    assert code == 0 and "┃ image" in out and "1 image\n" in out and "1 images" not in out
    code, out, err = cli("runs", run.parent.parent, "--format", "json")
    assert code == 0, err
    (r,) = json.loads(out)
    assert r["status"] == "finished" and r["path"] == str(run) and r["steps"] == 2
    code, out, err = cli("runs", run.parent.parent)  # not a terminal: tsv
    assert code == 0 and out.splitlines()[1].split("\t")[-1] == str(run) and "runs below" in err
    code, out, _ = cli("models", "list", "--format", "tsv")
    assert out.splitlines()[0] == "part\tname\tdepth\twhat"
    assert {"backbone", "norm", "activation", "sequence", "head", "transform"} == \
        {line.split("\t")[0] for line in out.splitlines()[1:]}
    code, out, err = cli("predict", run, words, "--format", "xml")
    assert code == 2 and err.strip() == "error: --format xml: unknown (valid: table, tsv, json)" and not out


def test_eval_into_a_pipe_prints_only_rows_on_stdout(run, cli):
    code, out, err = cli("eval", run)
    assert code == 0, err
    header, val = out.splitlines()
    assert header.startswith("dataset\tsamples\tword acc %") and val.startswith("val\t24\t")
    assert "eval — step 2" in err and "written:" in err
    code, out, _ = cli("eval", run, "--format", "json")
    (row,) = json.loads(out)
    assert row["dataset"] == "val" and row["samples"] == 24 and 0 <= row["cer"]


# ----------------------------------------------------------------------------------------------- --out -


def test_predict_out_dash_writes_csv_to_stdout_with_newline_endings(run, words, cli, tmp_path):
    code, out, err = cli("predict", run, words, "--out", "-")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [Path(r["id"]).name for r in rows] == ["a01-122-05-06.png", "a01-122-05-07.png", "b02-001-00-00.png",
                                                  "broken.jpg"]
    assert rows[3]["error"] and not rows[3]["confidence"]
    code, out, _ = cli("predict", run, words, "--out", "-", "--format", "json")
    assert len(json.loads(out)) == 4
    code, _, err = cli("predict", run, words, "--out", tmp_path / "p.csv")
    assert code == 0 and "written:" in err and "(4 images)" in err
    data = (tmp_path / "p.csv").read_bytes()
    assert b"\r\n" not in data and data.count(b"\n") == 5


def test_outputs_that_cannot_go_to_stdout_say_so(cli, tmp_path):
    for args in (("data", "preview", "--type", "synth", "--opt", "size=4", "--out", "-"),
                 ("data", "convert", "--type", "synth", "--opt", "size=4", "--out", "-")):
        code, out, err = cli(*args)
        assert code == 2 and err.startswith("error: --out -:") and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "-").exists() and not Path("-").exists()


def test_data_check_json_dash_and_lm_build_out_dash(cli, tmp_path):
    code, out, err = cli("data", "check", "--type", "synth", "--opt", "size=3", "--json", "-")
    assert code == 0, err
    assert json.loads(out)["synth"]["samples"] == 3 and "synth: 3 samples, 3 images decoded" in err
    labels = tmp_path / "labels.txt"
    labels.write_text("hello\nworld\nhold\n")
    code, out, err = cli("lm", "build", labels, "--order", "2", "--out", "-")
    assert code == 0, err
    assert out.lstrip().startswith("\\data\\") and "\\2-grams:" in out and "written: stdout (order 2, 3 labels" in err


# ------------------------------------------------------------------------------------------ closed pipes


def test_a_closed_pipe_ends_the_command_quietly_with_exit_0(run):
    for args in (("models", "list"), ("models", "list", "--format", "table"), ("eval", run)):
        code, _, err = _cvlab(*args, close_stdout=True)
        assert code == 0, (args, err)
        assert "Traceback" not in err and "Exception ignored" not in err and "Broken pipe" not in err, err


# ---------------------------------------------------------------------------------- predict: nothing read


def test_predict_fails_when_no_image_could_be_read(run, tmp_path, cli):
    truncated_jpeg(tmp_path / "x.jpg")
    (tmp_path / "y.png").write_bytes(b"not a png")
    code, out, err = cli("predict", run, tmp_path, "--out", tmp_path / "p.csv")
    assert code == 2 and "Traceback" not in err and not out
    (line,) = err.strip().splitlines()
    assert line.startswith("error: none of the 2 images could be read: ")
    assert str(tmp_path / "x.jpg") in line and str(tmp_path / "y.png") in line
    assert not (tmp_path / "p.csv").exists()
    code, _, err = cli("predict", run, tmp_path / "x.jpg")
    assert code == 2 and "none of the 1 image could be read" in err


# --------------------------------------------------------------------------------------------------- ~


def test_tilde_is_expanded_in_path_options(run, words, cli, tmp_path, monkeypatch):
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    code, _, err = cli("predict", run, words / "a01-122-05-06.png", "--out=~/p.csv")
    assert code == 0 and (home / "p.csv").is_file(), err
    code, _, err = cli("data", "check", "--type", "synth", "--opt", "size=2", "--json=~/sub/c.json")
    assert code == 0 and (home / "sub" / "c.json").is_file(), err
    (home / "runs").symlink_to(run.parent.parent)
    code, out, err = cli("runs", "~/runs", "--format", "json")
    assert code == 0 and json.loads(out)[0]["path"] == str(home / "runs" / "p" / run.name), err
    code, out, err = cli("eval", run, "--checkpoint=~/ckpt.pt")
    assert code == 2 and str(home / "ckpt.pt") in err, err
    (home / "afile").write_text("")
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(tiny_experiment()))
    code, _, err = cli("train", exp, "--runs-dir=~/afile")
    assert code == 2 and f"--runs-dir {home / 'afile'}" in err, err
    assert list(cwd.iterdir()) == []  # never a literal ./~ folder


# -------------------------------------------------------------------------------------- runs clean, stdin


def _empty_run(root: Path) -> Path:
    empty = root / "killed" / "20260101-000000"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "config.yaml").write_text(yaml.safe_dump(tiny_experiment(name="killed")))
    return empty


def test_runs_clean_removes_nothing_without_a_yes(tmp_path, cli, monkeypatch):
    empty = _empty_run(tmp_path / "runs")
    code, out, err = _cvlab("runs", "clean", tmp_path / "runs")  # stdin is /dev/null: no answer
    assert code == 0 and "Traceback" not in err, err
    assert out.splitlines()[-1].startswith("nothing removed") and empty.is_dir()
    for answer in ("n\n", "whatever\n", ""):
        monkeypatch.setattr(sys, "stdin", io.StringIO(answer))
        code, out, err = cli("runs", "clean", tmp_path / "runs")
        assert code == 0 and "nothing removed" in out and "remove this run that" in err, (answer, err)
        assert empty.is_dir()
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    code, out, _ = cli("runs", "clean", tmp_path / "runs")
    assert code == 0 and "removed 1 run\n" in out and not empty.exists()


# ----------------------------------------------------------------------------------------------- messages


def test_version(cli):
    import torch

    import cvlab

    code, out, _ = cli("--version")
    assert code == 0 and out.startswith(f"cvlab {cvlab.__version__} (torch {torch.__version__}")


def test_lm_build_order_help_and_validation_agree(cli, tmp_path):
    code, out, _ = cli("lm", "build", "--help")
    assert code == 0 and "2 or more" in out and "x>=1" not in out
    labels = tmp_path / "l.txt"
    labels.write_text("ab\nba\n")
    code, _, err = cli("lm", "build", labels, "--order", "1", "--out", tmp_path / "a.arpa")
    assert code == 2 and err.startswith("error: --order 1: give 2 or more") and len(err.splitlines()) == 1
    assert not (tmp_path / "a.arpa").exists()
    code, out, err = cli("lm", "build", labels, "--order", "2", "--out", tmp_path / "a.arpa")
    assert code == 0 and (tmp_path / "a.arpa").is_file() and "2 labels" in out, err


def test_tensorboard_hint_is_pasteable_with_a_space_in_the_path():
    from cvlab.cli.common import _tensorboard_cmd

    logdir = Path("/tmp/my runs/it's here")
    words = shlex.split(_tensorboard_cmd(logdir))
    assert words[-2:] == ["--logdir", str(logdir)] and Path(words[0]).name == "tensorboard"


def test_a_dataset_with_nothing_scored_shows_no_rates_and_no_no_errors(run, tmp_path, cli):
    for name in ("x.png", "y.png"):
        png(tmp_path / "punct" / name, 20, 10)
    # DTRB filters both labels: a character outside 0-9a-z
    (tmp_path / "punct" / "gt.txt").write_text("x.png\tab!\ny.png\t?c\n")
    code, out, err = cli("eval", run, "--data", f"folder:{tmp_path / 'punct'}", "--protocol", "dtrb",
                         "--format", "table")
    assert code == 0, err
    (row,) = [line for line in out.splitlines() if line.startswith("│ folder")]
    assert [c.strip() for c in row.split("│")[2:-1]] == ["0", "2", "—", "—", "—", "—", "—"]
    assert "0.00" not in row and "no errors" not in out and "folder: no sample was scored" in out
    code, out, _ = cli("eval", run, "--data", f"folder:{tmp_path / 'punct'}", "--protocol", "dtrb", "--format",
                       "json")
    (rec,) = json.loads(out)
    assert rec["samples"] == 0 and rec["cer"] is None and rec["word_acc"] is None
    assert rec["filtered"] and sum(rec["filtered"].values()) == 2


@pytest.mark.parametrize("argv, message", [
    (["train", "x.yaml", "--nope"], "No such option: --nope"),
    (["runs", "--runs-dir", "/x"], "No such option: --runs-dir"),
    (["runs", "--format"], "Option '--format' requires an argument"),
    (["frobnicate"], "No such command 'frobnicate'"),
])
def test_usage_errors_are_one_line_exit_2(cli, argv, message):
    """Typer's own usage errors (unknown option, bad value, unknown command) keep the contract: one line."""
    code, out, err = cli(*argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "╭" not in err and "Traceback" not in err


def test_error_text_is_printed_as_written_never_as_emoji(tmp_path):
    """rich turns `:x:`-like codes into emoji by default: a spec such as `folder:x` or a label must stay text."""
    code, _, err = _cvlab("eval", str(tmp_path), "--data", "nosuchtype:x:")
    assert code == 2 and "nosuchtype:x" in err and "❌" not in err
