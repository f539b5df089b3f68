"""benchmarks/eval_speed.py runs end to end (`--quick`, a few images, the quickstart model) and prints every
stage; the figures themselves are the lead's to measure on a quiet machine, never asserted here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_eval_speed_prints_every_stage():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "eval_speed.py"), "--quick", "--n", "12",
                           "--batch-size", "8", "--models", "quickstart", "--threads", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "CPU: " in out and "torch threads: 1" in out and "12 images, batch 8" in out
    for line in ("python -c 'import torch'", "cvlab --version", "python -c 'import cvlab.cli'",
                 "imports of the eval path", "packages on the eval path: torch"):
        assert line in out, line
    for stage in ("data (eval loader)", "data (predict reader)", "forward", "decoding", "metrics", "writing (CSV)",
                  "eval loop (evaluate)", "batch norms folded", "predictions ≠ default"):
        assert f"\n  {stage}" in out, stage
    assert "default" in out and "no-fold" in out
    assert "onnxruntime" in out and "int8" in out and "ONNX export written" in out  # the --backend onnxruntime rows
    for command in ("cvlab eval [default]", "cvlab predict [default]"):
        line = next(x for x in out.splitlines() if command in x)
        assert "images/s" in line and "failed" not in line, line
