"""`cvlab predict` on a folder, a glob and an LMDB, checked against what `cvlab eval` predicted for the same images."""

from __future__ import annotations

import csv
import json

import pytest
import yaml
from conftest import tiny_experiment
from data_fixtures import make_folder, make_lmdb

from cvlab.engine.eval.records import latest
from cvlab.engine.predict import predict


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from cvlab.cli import run as cli_run

    root = tmp_path_factory.mktemp("predict")
    exp = root / "exp.yaml"
    exp.write_text(yaml.safe_dump(tiny_experiment(train={"steps": 2, "eval_every": 2, "batch_size": 4, "threads": 1},
                                                  log={"tensorboard": False, "image_grid": 0})))
    assert cli_run(["train", str(exp), "--runs-dir", str(root / "runs"), "--name", "p"]) == 0
    (run_dir,) = (root / "runs" / "p").iterdir()
    return run_dir


def test_predict_an_lmdb_matches_eval_predictions(run, tmp_path, cli):
    root = make_lmdb(tmp_path / "lmdb")
    code, _, err = cli("eval", run, "--data", f"lmdb:{root}", "--protocol", "raw")
    assert code == 0, err
    ev, folder = latest(run)
    from_eval = {}
    for name in ev["datasets"]:
        with open(folder / ev["datasets"][name]["predictions"], encoding="utf-8") as f:
            from_eval.update({r["id"]: r for r in csv.DictReader(f)})
    rows = predict(run, [str(root)], batch_size=2)
    # every image is read, the unlabelled one too; the truncated JPEG gives a row saying why
    assert len(rows) == 6  # A: 4 images (one unlabelled; a label-only entry has none), B: 2
    (broken,) = [r for r in rows if "error" in r]
    assert broken["id"].endswith("image-000000002") and broken["confidence"] is None
    assert any(r["id"].endswith("A image-000000005") and "label" not in r for r in rows)
    for r in rows:
        if r["id"] in from_eval:
            assert r["text"] == from_eval[r["id"]]["prediction"]
            assert r["confidence"] == pytest.approx(float(from_eval[r["id"]]["confidence"]), abs=1e-5)
            assert r["label"] == from_eval[r["id"]]["label"]
    assert len(set(from_eval) & {r["id"] for r in rows}) == 4  # the labelled, readable images


def test_predict_a_folder_and_a_glob_through_the_cli(run, tmp_path, cli):
    root = make_folder(tmp_path / "f")
    code, out, err = cli("predict", run, root, "--out", tmp_path / "p.json")
    assert code == 0, err
    rows = json.loads((tmp_path / "p.json").read_text())
    assert [r["id"].removeprefix(str(root) + "/") for r in rows] == ["a/1.png", "b.png", "broken.jpg", "c d.png"]
    assert "could not be read" in err and "broken.jpg" in err
    assert all(0 <= r["confidence"] <= 1 for r in rows if "error" not in r)
    code, out, err = cli("predict", run, f"{root}/*.png", "--out", tmp_path / "p.csv")
    assert code == 0, err
    with open(tmp_path / "p.csv", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    assert [r["id"] for r in got] == [str(root / "b.png"), str(root / "c d.png")]
    assert got[0]["text"] == rows[1]["text"]  # same image, same reading, whatever the batch
    code, out, err = cli("predict", run, root / "b.png")  # not a terminal: a header and one tab-separated row
    assert code == 0 and out.splitlines()[0] == "image\ttext\tconfidence %"
    assert "1 image\n" in err and "1 images" not in err + out  # the title: on stderr, in the singular
    assert out.splitlines()[1].split("\t") == [str(root / "b.png"), rows[1]["text"],
                                               f"{100 * rows[1]['confidence']:.1f}"]


def test_predict_bad_inputs_exit_2(run, tmp_path, cli):
    code, _, err = cli("predict", run, tmp_path / "nothing.png")
    assert code == 2 and "no such file or folder" in err
    code, _, err = cli("predict", run, f"{tmp_path}/*.png")
    assert code == 2 and "no file matches" in err
    (tmp_path / "img.png").write_bytes(b"")
    code, _, err = cli("predict", run, tmp_path / "img.png", "--out", tmp_path / "x.txt")
    assert code == 2 and ".csv or .json" in err
    (tmp_path / "out.csv").mkdir()
    for target in (tmp_path / "out.csv", tmp_path / "img.png" / "p.csv"):  # a folder; below a file
        code, out, err = cli("predict", run, tmp_path / "img.png", "--out", target)
        assert code == 2 and "Traceback" not in err and "--out" in err and str(tmp_path) in err, err
