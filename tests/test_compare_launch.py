"""compare-norms through submitit's local executor (the same jobs a Slurm array runs, as local processes),
its dry run, and --gpus refused without CUDA."""

import csv
import json

import yaml
from conftest import tiny_experiment
from data_fixtures import png_bytes, write_lmdb


def _exp(tmp_path):
    """Words in a small LMDB, not rendered: each job is a fresh process, and the renderer's fonts would be
    loaded again in every one."""
    words = [b"ab", b"cab", b"b", b"abc"] * 4
    write_lmdb(tmp_path / "words", [(png_bytes(24 + 4 * i % 16, 32, 40 + 9 * i), w) for i, w in enumerate(words)])
    data = {"image": {"height": 32, "width": 64}, "train": [{"type": "lmdb", "root": str(tmp_path / "words")}],
            "val": [{"type": "lmdb", "root": str(tmp_path / "words"), "name": "val", "limit": 8}]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment(data=data, train={"steps": 1, "eval_every": 1})))
    return path


def test_submitit_local_executor_runs_a_two_variant_comparison(tmp_path, cli):
    exp, out = _exp(tmp_path), tmp_path / "out"
    args = ["compare-norms", exp, "--norms", "batch,group", "--batch-sizes", "2", "--out", out, "--protocol", "per-step",
            "--launcher", "submitit", "--submitit", "cluster=local", "--submitit", "timeout_min=5"]
    code, _, err = cli(*args, "--dry-run")
    assert code == 0, err
    assert err.count("would submit") == 2 and not list(out.glob("norm=*"))  # nothing trained, nothing written
    code, printed, err = cli(*args)
    assert code == 0, err
    assert "submitit (local): 2 variant job(s)" in err and err.count("): done") == 2
    with open(out / "summary.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["norm"] for r in rows) == ["batch", "group"] and {r["status"] for r in rows} == {"done"}
    for norm in ("batch", "group"):
        d = out / f"norm={norm},bs=2,seed=0"
        assert json.loads((d / "metrics.json").read_text())["step"] == 1  # a normal run, written by the job
        assert json.loads((d / "variant.json").read_text())["status"] == "done"
    assert list((out / "submitit").glob("*_log.out"))  # the jobs' own logs, where submitit keeps them
    code, _, err = cli(*args)  # rerun: finished variants are skipped, nothing is submitted
    assert code == 0 and err.count("finished earlier, skipped") == 2 and "(job " not in err


def test_launcher_options_are_checked_before_any_work(tmp_path, cli):
    exp, out = _exp(tmp_path), tmp_path / "out"
    code, _, err = cli("compare-norms", exp, "--norms", "batch", "--gpus", "0", "--out", out)
    assert code == 2 and "--gpus: CUDA is not available" in err
    code, _, err = cli("compare-norms", exp, "--norms", "batch", "--launcher", "slurm", "--out", out)
    assert code == 2 and "--launcher slurm: unknown (valid: local, submitit)" in err
    code, _, err = cli("compare-norms", exp, "--norms", "batch", "--submitit", "partition", "--out", out)
    assert code == 2 and "expected KEY=VALUE" in err
    assert not out.exists()
