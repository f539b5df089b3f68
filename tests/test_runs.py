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
    code, _, err = cli("train", "--resume", run_copy, "--set", "train.steps=8")  # with steps left to train
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
    rows = {line.split("\t")[-1]: line.split("\t") for line in out.splitlines()[1:]}  # not a terminal: tsv
    assert rows[str(empty)][:3] == ["killed", "empty", "0/6"]
    code, out, _ = cli("runs", "clean", root, "--yes")
    assert code == 0 and "removed 1 run\n" in out
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


def test_augment_preview_and_lm_build_check_their_out_before_any_work(cli, tmp_path, write_exp):
    """The shared output check (engine.runs.directory.check_writable_file) guards every --out: a parent that is
    a file, and a folder that refuses even root (/proc/self), are one error line naming the path."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    exp = write_exp(tiny_experiment(augment=[{"op": "rotate", "degrees": 3}]))
    parents = [blocker] + (["/proc/self"] if os.path.isdir("/proc/self") and not os.access("/proc/self", os.W_OK)
                           else [])
    for parent in parents:
        for args in (("augment", "preview", exp, "--out", f"{parent}/g.png"),
                     ("lm", "build", exp, "--order", "2", "--out", f"{parent}/x.arpa")):
            before = sorted(tmp_path.rglob("*"))
            code, out, err = cli(*args)
            assert code == 2 and "Traceback" not in err and str(parent) in err and "--out" in err, (args, err)
            assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err
            assert "written" not in out and sorted(tmp_path.rglob("*")) == before


def test_the_output_check_writes_for_real_and_leaves_nothing(tmp_path):
    """Permission bits do not tell everything (root, read-only mounts, /sys): the check creates and removes a
    file in the nearest existing folder, and a folder that refuses it is refused."""
    import tempfile

    from cvlab.engine.runs.directory import check_writable

    check_writable(tmp_path / "new" / "deeper", "--out")
    assert list(tmp_path.iterdir()) == []  # the probe file is gone, nothing was created
    try:  # /sys: permission bits say root may write, yet no file can be made there
        fd, name = tempfile.mkstemp(dir="/sys")
    except OSError:
        if not os.access("/sys", os.W_OK):
            pytest.skip("/sys is not a folder that permission bits call writable here")
        with pytest.raises(CvlabError, match=r"--out /sys/x: cannot write in /sys \("):
            check_writable("/sys/x", "--out")
    else:
        os.close(fd)
        os.unlink(name)
        pytest.skip("/sys takes new files here")


def test_resuming_a_finished_run_says_so_and_touches_nothing(run_copy, cli):
    before = _snapshot(run_copy)
    code, out, err = cli("train", "--resume", run_copy)
    assert code == 0, err
    assert "already finished at step 6 (train.steps 6); nothing to do" in err, err
    assert f"resuming {run_copy}" not in err, err
    assert "step 6" in out  # the run's results, as after training
    assert _snapshot(run_copy) == before  # no new event file, no second hparams, env.json as it was
    code, _, err = cli("train", "--resume", run_copy, "--set", "train.steps=4")
    assert code == 0 and "already finished at step 6, past train.steps 4" in err, err
    assert _snapshot(run_copy) == before  # config.yaml keeps train.steps 6

    (run_copy / "status.json").unlink()  # killed after its last checkpoint, before it was marked finished
    code, _, err = cli("train", "--resume", run_copy)
    assert code == 0 and "now marked" in err, err
    assert json.loads((run_copy / "status.json").read_text())["status"] == "finished"
    assert [r.status for r in list_runs(run_copy.parent)] == ["finished"]

    # killed between the last checkpoint and its metrics.json: the resume evaluates that step, as training would
    final = json.loads((run_copy / "metrics.json").read_text())
    (run_copy / "metrics.json").write_text(json.dumps({**final, "step": 3}))
    code, _, err = cli("train", "--resume", run_copy)
    assert code == 0 and "final evaluation was not recorded: evaluating" in err, err
    assert json.loads((run_copy / "metrics.json").read_text()) == final


def test_a_resume_after_a_kill_before_the_first_checkpoint_starts_clean(tmp_path, cli):
    """What SIGKILL before the first checkpoint leaves: config.yaml, env.json, a stale lock and an event file
    with steps 1-3. The resume starts over at step 0 without that file: TensorBoard shows each step once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from cvlab.config import dump_config

    cfg = load_config(raw=tiny_experiment(train={"steps": 4, "eval_every": 4}, log={"every": 1, "image_grid": 0}))
    run = tmp_path / "runs" / "tiny" / "20260101-000000"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(cfg))
    (run / "env.json").write_text(json.dumps({"command": ["cvlab", "train"], "seed": 0}))
    writer = SummaryWriter(str(run))
    for step in (1, 2, 3):
        writer.add_scalar("train/loss", 9.0, step)
    writer.close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "since": "then"}))
    code, _, err = cli("train", "--resume", run)
    assert code == 0, err
    assert "starts over at step 0; removed its 1 TensorBoard event file(s)" in err, err
    events = EventAccumulator(str(run), purge_orphaned_data=False)  # as written, no purging of repeats
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss")]
    assert steps == [1, 2, 3, 4] and 9.0 not in [e.value for e in events.Scalars("train/loss")]
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
