"""The engine owns runs: bad input leaves nothing behind, a refused resume changes no file, a live run is
locked, a crash between evaluations loses at most `checkpoint_every` steps, and `cvlab runs` lists it all."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import tiny_experiment

from cvlab.config import load_config
from cvlab.engine.runs.directory import LOCK
from cvlab.engine.runs.listing import list_runs
from cvlab.engine.train.loop import train
from cvlab.engine.train.start import start_run
from cvlab.errors import CvlabError


def _snapshot(run_dir):
    """Every file of the run with its bytes: a refused command must leave them all as they were."""
    return {p.relative_to(run_dir): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    run_dir, _ = start_run(load_config(raw=tiny_experiment(log={"every": 1, "image_grid": 0})), runs, name="done")
    return run_dir


@pytest.fixture
def run_copy(finished, tmp_path):
    import shutil

    dst = tmp_path / "runs" / "done" / finished.name
    shutil.copytree(finished, dst)
    return dst


def test_start_run_writes_the_complete_run(finished):
    names = {p.name for p in finished.iterdir()}
    assert {"config.yaml", "env.json", "metrics.json", "status.json", "checkpoints"} <= names
    assert LOCK not in names  # released at the end
    assert json.loads((finished / "status.json").read_text())["status"] == "finished"


def test_train_from_python_leaves_a_run_with_its_config(tmp_path):
    cfg = load_config(raw=tiny_experiment(train={"steps": 2, "eval_every": 2}, log={"tensorboard": False}))
    train(cfg, tmp_path / "run")
    assert load_config(tmp_path / "run" / "config.yaml") == cfg
    assert json.loads((tmp_path / "run" / "env.json").read_text())["seed"] == 0


@pytest.mark.parametrize("override,key", [("model.sequence.name=gru", "model.sequence.name"),
                                          ("data.image.width=80", "data.image.width"),
                                          ("train.lr=0.5", "train.lr")])
def test_resume_refuses_model_or_data_changes_before_touching_a_file(run_copy, cli, override, key):
    before = _snapshot(run_copy)
    code, _, err = cli("train", "--resume", run_copy, "--set", override)
    assert code == 2 and key in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert _snapshot(run_copy) == before


def test_resume_may_extend_the_schedule(run_copy, cli):
    code, out, err = cli("train", "--resume", run_copy, "--set", "train.steps=8", "--set", "train.eval_every=4")
    assert code == 0, err
    assert json.loads((run_copy / "metrics.json").read_text())["step"] == 8
    assert load_config(run_copy / "config.yaml").train.steps == 8
    env = json.loads((run_copy / "env.json").read_text())
    assert len(env["resumed"]) == 1


def test_resume_with_a_checkpoint_of_another_model_names_the_tensors(run_copy, cli):
    last = run_copy / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    key = next(k for k, v in state["model"].items() if v.ndim == 4)
    state["model"][key] = torch.zeros(3, 3, 3, 3)
    torch.save(state, last)
    before = _snapshot(run_copy)
    code, _, err = cli("train", "--resume", run_copy)
    assert code == 2 and key in err and "differ in shape" in err, err
    assert _snapshot(run_copy) == before


def test_a_live_lock_refuses_a_second_writer_and_a_stale_one_is_taken_over(run_copy, cli):
    lock = run_copy / LOCK
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": "now"}))
    before = _snapshot(run_copy)
    code, _, err = cli("train", "--resume", run_copy, "--set", "train.steps=7")
    assert code == 2 and "being trained by another process" in err and str(os.getpid()) in err, err
    assert _snapshot(run_copy) == before
    assert [r.status for r in list_runs(run_copy.parent)] == ["running"]

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    assert [r.status for r in list_runs(run_copy.parent)] == ["interrupted"]
    code, _, err = cli("train", "--resume", run_copy, "--set", "train.steps=7")
    assert code == 0 and "stale lock" in err, err
    assert not lock.exists()


@pytest.mark.parametrize("case", ["runs_dir_is_a_file", "missing_data", "bad_device", "unwritable"])
def test_bad_input_is_exit_2_and_leaves_nothing(cli, tmp_path, write_exp, case):
    exp = tiny_experiment()
    runs = tmp_path / "runs"
    if case == "runs_dir_is_a_file":
        runs.write_text("")
    elif case == "missing_data":
        exp["data"]["val"] = [{"type": "folder", "root": str(tmp_path / "nope")}]
    elif case == "bad_device":
        exp["train"]["device"] = "cuda:7" if not torch.cuda.is_available() else "tpu"
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write anywhere")
        runs.mkdir()
        runs.chmod(0o500)
    path = write_exp(exp)
    before = sorted(tmp_path.rglob("*"))
    code, _, err = cli("train", path, "--runs-dir", runs)
    assert code == 2 and "Traceback" not in err, err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err
    assert sorted(tmp_path.rglob("*")) == before


def test_ctrl_c_before_the_first_checkpoint_removes_the_run(tmp_path):
    def interrupt(step, model, loss_fn):
        raise KeyboardInterrupt

    cfg = load_config(raw=tiny_experiment())
    with pytest.raises(KeyboardInterrupt):
        start_run(cfg, tmp_path / "runs", probe=interrupt)
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_crash_between_evaluations_loses_at_most_checkpoint_every_steps(tmp_path):
    exp = tiny_experiment(train={"steps": 12, "eval_every": 6, "checkpoint_every": 2},
                          log={"every": 1, "image_grid": 0, "tensorboard": False})
    ref = train(load_config(raw=exp), tmp_path / "ref")

    def crash_at_step_10(step, model, loss_fn):  # a probe runs after backward: step 10 is half done
        if step == 10:
            raise RuntimeError("simulated crash")
        return {}

    with pytest.raises(RuntimeError):
        train(load_config(raw=exp), tmp_path / "run", probe=crash_at_step_10)
    run = tmp_path / "run"
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=False)["step"] == 8
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    assert [r.status for r in list_runs(tmp_path) if r.path == run] == ["failed"]
    got = train(load_config(run / "config.yaml"), run, resume=True)
    assert got["datasets"] == ref["datasets"]
    a = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cvlab_runs_lists_and_cleans(finished, cli, tmp_path):
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(finished, root / "done" / finished.name)
    empty = root / "killed" / "20260101-000000"
    (empty / "checkpoints").mkdir(parents=True)
    (empty / "config.yaml").write_text(yaml.safe_dump(tiny_experiment(name="killed")))
    code, out, err = cli("runs", root)
    assert code == 0, err
    assert "finished" in out and "empty" in out and "6/6" in out and str(empty) in out
    code, out, _ = cli("runs", "clean", root, "--yes")
    assert code == 0 and "removed 1 runs" in out
    assert not empty.exists() and (root / "done").exists()
    assert cli("runs", tmp_path / "nope")[0] == 2


def test_start_run_refuses_a_bad_name(tmp_path):
    with pytest.raises(CvlabError, match="--name"):
        start_run(load_config(raw=tiny_experiment()), tmp_path, name="a/b")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_outputs_are_exit_2_before_any_work(cli, tmp_path, write_exp):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    exp = write_exp()
    for args in (("compare-norms", exp, "--norms", "group", "--out", blocker),
                 ("compare-norms", exp, "--norms", "group", "--out", blocker / "sub"),
                 ("data", "check", "--type", "synth", "--opt", "size=4", "--json", blocker / "x.json"),
                 ("data", "check", "--type", "synth", "--opt", "size=4", "--json", tmp_path),
                 ("data", "preview", "--type", "synth", "--opt", "size=4", "--out", blocker / "p.png"),
                 ("data", "convert", "--type", "synth", "--opt", "size=4", "--out", blocker / "lmdb")):
        before = sorted(tmp_path.rglob("*"))
        code, _, err = cli(*args)
        assert code == 2 and "Traceback" not in err and str(blocker if args[-1] != tmp_path else tmp_path) in err, \
            (args, err)
        assert sorted(tmp_path.rglob("*")) == before


def test_eval_of_a_checkpoint_from_another_model_is_exit_2(finished, cli):
    code, _, err = cli("eval", finished, "--set", "model.sequence.hidden=16")
    assert code == 2 and "different model" in err and "Traceback" not in err, err


@pytest.mark.parametrize("blocker", ["eval", "eval/index.jsonl"])
def test_eval_that_cannot_be_saved_still_prints_its_results_then_exit_2(run_copy, cli, blocker):
    path = run_copy / blocker
    if blocker == "eval":
        path.write_text("")  # a file where the eval/ history should be
    else:
        (path / "x").mkdir(parents=True)  # the history index is a folder: eval.json is written, the index not
    before = set(run_copy.rglob("*"))
    code, out, err = cli("eval", run_copy)
    assert code == 2 and "Traceback" not in err, err
    assert "val" in out and "word" in out.lower(), out  # the computed table, before the error
    assert "written:" not in out
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert str(run_copy / "eval") in line and "not saved" in line, err
    assert set(run_copy.rglob("*")) == before  # no half-written evaluation left behind


def test_a_group_norm_run_saved_before_min_channels_per_group_rebuilds_as_it_trained(tmp_path):
    """Before the key existed, 32 groups on a 16-channel layer meant 16 groups of 1 (instance norm); a run whose
    config.yaml lacks the key is rebuilt that way on eval and resume, not with today's default of 2 per group."""
    import yaml
    from torch import nn

    from cvlab.engine.runs.load import load_run

    exp = tiny_experiment(model={"backbone": {"name": "vgg", "size": "tiny", "norm_at": "all"},
                                 "norm": {"name": "group", "groups": 32}},
                          train={"steps": 1, "batch_size": 2, "eval_every": 1, "threads": 1}, log={"image_grid": 0})
    run_dir, _ = start_run(load_config(raw=exp), tmp_path, name="gn")

    def first_groups(model) -> int:
        return next(m for m in model.modules() if isinstance(m, nn.GroupNorm)).num_groups

    assert first_groups(load_run(run_dir).model) == 8  # today's run: 16 channels, at least 2 per group
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    del saved["model"]["norm"]["min_channels_per_group"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    old = load_run(run_dir)
    assert first_groups(old.model) == 16 and old.cfg.model.norm.min_channels_per_group == 1
