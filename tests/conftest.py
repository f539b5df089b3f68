"""Shared fixtures: a tiny experiment that trains in seconds, and a CLI runner that captures clean text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def tiny_experiment(**sections) -> dict:
    """A complete experiment dict: tiny CRNN, 32×64 synthetic words of 1-5 chars, one thread (deterministic).
    Clean renders (`style: plain`, 2.5× cheaper than the MJSynth recipe): these tests are about the engine; the
    recipe's stages have tests of their own (test_synth.py)."""
    exp = {
        "name": "tiny",
        "seed": 0,
        "data": {
            "image": {"height": 32, "width": 64},
            "train": [{"type": "synth", "size": 512, "seed": 0, "max_len": 5, "style": "plain"}],
            "val": [{"type": "synth", "name": "val", "size": 24, "seed": 1, "max_len": 5, "style": "plain"}],
        },
        "model": {"backbone": {"name": "vgg", "size": "tiny"}, "sequence": {"hidden": 32, "layers": 1}},
        "train": {"steps": 6, "batch_size": 4, "eval_every": 3, "warmup_steps": 1, "threads": 1},
        "log": {"every": 1, "image_grid": 4},
    }
    for key, value in sections.items():
        exp[key] = {**exp.get(key, {}), **value} if isinstance(value, dict) else value
    return exp


@pytest.fixture
def write_exp(tmp_path):
    def write(exp: dict | None = None, name: str = "exp.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(exp or tiny_experiment()), encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli(capsys):
    """Run `cvlab ...` in-process; returns (exit code, stdout, stderr) with ANSI codes stripped."""
    from cvlab.cli import run

    def invoke(*args: str):
        code = run([str(a) for a in args])
        cap = capsys.readouterr()
        return code, ANSI.sub("", cap.out), ANSI.sub("", cap.err)

    return invoke


def torchrun_train(exp: dict, folder: Path, runs: str = "runs"):
    """A real `torchrun --standalone --nproc-per-node 2 -m cvlab train` of `exp` (two gloo processes, one
    thread each) under `folder`; returns the CompletedProcess (stdout, stderr captured)."""
    import os
    import subprocess
    import sys

    (folder / "two.yaml").write_text(yaml.safe_dump(exp), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "cvlab", "train", str(folder / "two.yaml"), "--runs-dir", str(folder / runs)],
                          env={**env, "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
                               "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
