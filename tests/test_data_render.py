"""`cvlab data render`: synthetic words pre-rendered into the standard LMDB, identical to the same samples on the
fly, the same with any number of processes, resumable after an interruption, and trainable like any LMDB."""

from __future__ import annotations

import json

import lmdb
import pytest
import torch
import yaml
from conftest import tiny_experiment

from cvlab.config import load_config
from cvlab.config.data import LmdbSpec
from cvlab.data.charset import resolve_charset
from cvlab.data.convert import encode_sample
from cvlab.data.formats.lmdb import close_env
from cvlab.data.loaders import build_dataset, datasets_for
from cvlab.data.render import Interrupted, experiment_targets, render_lmdb
from cvlab.errors import CvlabError

N = 50


def entries(folder) -> dict[bytes, bytes]:
    """Every key and value of the LMDB in `folder`, read with plain lmdb calls."""
    close_env(folder)  # py-lmdb opens a path once per process
    env = lmdb.open(str(folder), readonly=True, lock=False)
    with env.begin() as txn:
        out = {bytes(k): bytes(v) for k, v in txn.cursor()}
    env.close()
    return out


def write(path, exp: dict):
    path.write_text(yaml.safe_dump(exp), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The tiny experiment's training words 0..39 rendered by the CLI (one process): (experiment, LMDB folder)."""
    from cvlab.cli import run

    root = tmp_path_factory.mktemp("render")
    exp = write(root / "exp.yaml", tiny_experiment())
    assert run(["data", "render", str(exp), "--n", str(N), "--out", str(root / "lmdb")]) == 0
    return exp, root / "lmdb"


def _target(exp, n: int = N):
    (target,), _ = experiment_targets(load_config(exp), "train", n)
    return target


def _compare_with_on_the_fly(exp, folder, n: int) -> None:
    cfg = load_config(exp)
    (fly,) = datasets_for(cfg, "train").values()
    stored = build_dataset(LmdbSpec(root=str(folder)), resolve_charset(cfg.data.charset), cfg.data)
    db = entries(folder)
    assert int(db[b"num-samples"]) == n == len(stored)
    for i in range(n):
        data, label = encode_sample(fly, i)
        assert db[b"image-%09d" % (i + 1)] == data and db[b"label-%09d" % (i + 1)].decode() == label
        image, fly_label = fly[i]
        stored_image, stored_label = stored[i]
        assert stored_label == fly_label
        assert torch.equal(stored_image, image), i


def test_samples_decode_to_the_tensors_and_labels_on_the_fly(rendered):
    exp, folder = rendered
    assert entries(folder)[b"image-000000001"].startswith(b"\x89PNG")
    _compare_with_on_the_fly(exp, folder, N)


def test_identical_with_the_full_recipe_another_resize_and_colour(cli, tmp_path):
    train = [{"type": "synth", "size": 1000, "seed": 5}]  # every stage at its default: blur, noise, JPEG, ...
    exp = write(tmp_path / "exp.yaml", tiny_experiment(data={"train": train, "image": {
        "height": 32, "width": 100, "channels": 3, "resize": "keep_ratio", "interpolation": "bicubic"}}))
    code, out, err = cli("data", "render", exp, "--n", N, "--out", tmp_path / "lmdb", "--jobs", 2)
    assert code == 0, err
    assert f"written {N} samples of data.train[0]" in out and f"render {N}/{N}" in err and "samples/s" in err
    assert "data.train[0]: rendering with" in err  # the dataset's report, as training start prints it
    _compare_with_on_the_fly(exp, tmp_path / "lmdb", N)


def test_two_processes_write_the_same_lmdb_as_one(rendered, tmp_path):
    exp, folder = rendered
    res = render_lmdb(_target(exp), tmp_path / "two", jobs=2, commit_every=7)
    assert res["rendered"] == N and res["from"] == 0
    assert entries(tmp_path / "two") == entries(folder)


class _KilledAt:
    """A progress whose update raises Ctrl-C once `at` samples are done."""

    def __init__(self, at: int):
        self.at = at

    def start(self, total, done=0): ...
    def message(self, text): ...
    def stop(self): ...

    def update(self, step, **values):
        if step >= self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_interrupted_render_continues_to_the_same_lmdb(rendered, tmp_path, monkeypatch, jobs):
    import cvlab.data.render as render

    exp, folder = rendered
    out = tmp_path / "cut"
    if jobs == 1:  # Ctrl-C while sample 20 renders: the chunk in progress (16..23) is lost
        real = render.encode_sample

        def encode(ds, i):
            if i == 20:
                raise KeyboardInterrupt
            return real(ds, i)

        monkeypatch.setattr(render, "encode_sample", encode)
        progress, committed = None, 16
    else:  # Ctrl-C as the bar shows 24 samples, just after their chunk was committed
        progress, committed = _KilledAt(20), 24
    with pytest.raises(Interrupted) as info:
        render_lmdb(_target(exp), out, jobs=jobs, commit_every=8, progress=progress)
    monkeypatch.undo()
    assert (info.value.done, info.value.total) == (committed, N)
    partial = entries(out)
    assert b"num-samples" not in partial and b"image-%09d" % committed in partial
    assert b"image-%09d" % (committed + 1) not in partial
    # the loader never reads it as complete, and says what it is
    with pytest.raises(CvlabError, match=rf"no `num-samples` key; an unfinished `cvlab data render` \({committed} of "
                                         rf"{N} samples written\); rerun the same command"):
        build_dataset(LmdbSpec(root=str(out)), "abc", load_config(exp).data)
    res = render_lmdb(_target(exp), out, jobs=3 - jobs, commit_every=8)
    assert (res["from"], res["rendered"]) == (committed, N - committed)
    assert entries(out) == entries(folder)
    again = render_lmdb(_target(exp), out)
    assert again["complete_before"] and again["rendered"] == 0


def test_the_cli_reports_an_interruption_and_continues(rendered, cli, tmp_path, monkeypatch):
    exp, folder = rendered
    import cvlab.cli.progress as progress

    monkeypatch.setattr(progress, "make_count_progress", lambda *a, **k: _KilledAt(32))
    code, _, err = cli("data", "render", exp, "--n", N, "--out", tmp_path / "lmdb")
    assert code == 130
    assert f"interrupted: 0 of {N} samples of data.train[0] committed" in err  # 1000 a chunk: none committed yet
    monkeypatch.undo()
    code, out, err = cli("data", "render", exp, "--n", N, "--out", tmp_path / "lmdb")
    assert code == 0, err
    assert entries(tmp_path / "lmdb") == entries(folder)
    code, out, err = cli("data", "render", exp, "--n", N, "--out", tmp_path / "lmdb")
    assert code == 0 and f"already holds all {N} samples of data.train[0]; nothing to do" in out


def test_a_rerun_with_another_spec_is_refused(cli, tmp_path):
    args = ["data", "render", "--type", "synth", "--opt", "style=plain", "--opt", "max_len=5", "--out", tmp_path / "s"]
    code, out, err = cli(*args, "--n", 6)
    assert code == 0, err
    before = entries(tmp_path / "s")
    code, out, err = cli(*args, "--n", 6, "--opt", "seed=4")
    assert code == 2 and err.count("\n") == 1
    assert "holds a render of another spec (differs in spec.seed)" in err and "Traceback" not in err
    code, out, err = cli(*args, "--n", 8, "--charset", "alnum62")
    assert code == 2 and "differs in charset, n, spec.size" in err
    assert entries(tmp_path / "s") == before
    # an LMDB some other tool wrote is not continued either
    assert cli("data", "convert", "--type", "synth", "--opt", "size=2", "--out", tmp_path / "c")[0] == 0
    code, out, err = cli(*args, "--n", 6, "--out", tmp_path / "c")
    assert code == 2 and "`cvlab data render` did not write" in err


def test_bad_arguments_are_refused_before_any_work(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    # the output is checked first: the missing experiment is not even read
    code, _, err = cli("data", "render", tmp_path / "missing.yaml", "--out", blocker / "lmdb")
    assert code == 2 and err.startswith("error: --out") and "is a file, not a folder" in err
    assert err.count("\n") == 1
    code, _, err = cli("data", "render", "--type", "synth", "--out", "-")
    assert code == 2 and err.startswith("error: --out -:") and err.count("\n") == 1
    code, _, err = cli("data", "render", "--type", "svt", "--out", tmp_path / "x")
    assert code == 2 and "only synthetic data is rendered" in err and "cvlab data convert" in err
    code, _, err = cli("data", "render", "--type", "synth", "--split", "val", "--out", tmp_path / "x")
    assert code == 2 and "--split applies to an EXPERIMENT" in err
    exp = write(tmp_path / "exp.yaml", tiny_experiment(data={"val": [{"type": "lmdb", "root": str(tmp_path)}]}))
    code, _, err = cli("data", "render", exp, "--split", "val", "--out", tmp_path / "x")
    assert code == 2 and "data.val: no synthetic dataset (type: synth) to render (it lists lmdb)" in err
    assert not (tmp_path / "x").exists()


def test_several_synthetic_sets_go_to_a_folder_each_and_others_are_named(cli, tmp_path):
    val = [{"type": "synth", "name": "a", "size": 5, "seed": 1, "style": "plain"},
           {"type": "folder", "root": str(tmp_path / "nowhere")},
           {"type": "synth", "name": "b", "size": 3, "seed": 2, "style": "plain"}]
    exp = write(tmp_path / "exp.yaml", tiny_experiment(data={"val": val}))
    code, out, err = cli("data", "render", exp, "--split", "val", "--out", tmp_path / "v")
    assert code == 0, err
    assert "data.val[1] (folder) is not synthetic: not rendered" in err
    assert int(entries(tmp_path / "v" / "a")[b"num-samples"]) == 5
    assert int(entries(tmp_path / "v" / "b")[b"num-samples"]) == 3
    record = json.loads(entries(tmp_path / "v" / "b")[b"cvlab-render"])
    assert record["n"] == 3 and record["spec"]["seed"] == 2


def test_an_experiment_trains_on_the_rendered_lmdb(rendered, cli, tmp_path):
    _, folder = rendered
    exp = write(tmp_path / "exp.yaml", tiny_experiment(
        data={"train": [{"type": "lmdb", "root": str(folder)}]}, train={"steps": 2, "eval_every": 2}))
    code, out, err = cli("train", exp, "--runs-dir", tmp_path / "runs", "--name", "lmdb")
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs" / "lmdb").iterdir()
    assert json.loads((run_dir / "metrics.json").read_text())["step"] == 2
