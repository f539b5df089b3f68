"""`cvlab data check|convert|preview` and `cvlab eval --data TYPE:ROOT:SPLIT` on fixtures in their real form."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import tiny_experiment
from data_fixtures import (
    make_folder,
    make_iam,
    make_icdar,
    make_iiit5k,
    make_iiit5k_charbound,
    make_lmdb,
    make_rimes,
    make_svt,
    read_lmdb,
)
from PIL import Image


def test_check_prints_and_writes_json(cli, tmp_path):
    root = make_folder(tmp_path / "f")
    code, out, err = cli("data", "check", "--type", "folder", "--root", root, "--json", tmp_path / "r.json")
    assert code == 0, err
    assert "dropped 1: image file missing" in out and "dropped 1: image unreadable" in out
    assert "'ë'×1" in out and "'H'" not in out and "label lengths:" in out  # capitals fold, "ë" is lost
    r = json.loads((tmp_path / "r.json").read_text())["folder"]
    assert r["samples"] == 4 and r["readable"] == 3 and r["outside_charset"][" "] == 2
    assert r["label_lengths"] == {"3": 1, "5": 1, "11": 2}


def test_check_root_with_a_colon(cli, tmp_path):
    """--type/--root/--split build the spec directly: a `:` in the root is part of the path, not a separator."""
    root = make_folder(tmp_path / "scans:2024" / "f")
    code, out, err = cli("data", "check", "--type", "folder", "--root", root, "--json", tmp_path / "r.json")
    assert code == 0, err
    r = json.loads((tmp_path / "r.json").read_text())["folder"]
    assert r["samples"] == 4 and r["readable"] == 3


def test_iiit5k_charbound_labels(cli, tmp_path):
    """The real `testCharBound.mat` (ImgName, chars, charBB; no GroundTruth) as `--opt labels=`: its words."""
    root = make_iiit5k_charbound(tmp_path / "cb")
    code, out, err = cli("data", "convert", "--type", "iiit5k", "--root", root, "--split", "test",
                         "--opt", "labels=testCharBound.mat", "--out", tmp_path / "out")
    assert code == 0, err
    assert [label for _, label in read_lmdb(tmp_path / "out")] == ["Private", "HELLO"]
    assert "labels from `chars` of testCharBound.mat" in err and "dropped 1: image file missing" in err


def test_eval_data_ambiguous_colon_is_one_line(cli, tmp_path):
    code, out, err = cli("eval", tmp_path / "run", "--data", f"lmdb:{tmp_path}/nope:A")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "cannot tell whether 'A' is a split of lmdb or part of the root" in err
    assert "--data lmdb --opt root=PATH --opt split=NAME" in err


def test_check_experiment_uses_its_charset(cli, tmp_path, write_exp):
    root = make_icdar(tmp_path / "ic")
    exp = tiny_experiment(data={"charset": "alnum62", "val": [{"type": "ic13", "root": str(root), "split": "test"}]})
    code, out, err = cli("data", "check", write_exp(exp))
    assert code == 0, err
    assert "val/ic13_test: 6 samples" in out and "','×1" in out and "'T'" not in out


@pytest.mark.parametrize("args, needle", [
    (["--type", "ic13", "--root", "{gt}"], "Challenge2_Test_Task3_GT.txt:7: expected"),
    (["--type", "iam", "--root", "{tmp}/nope"], "expected ROOT/ascii"),
    (["--type", "nope", "--root", "{tmp}"], "unknown type nope"),
    (["--type", "ic15", "--root", "{tmp}", "--opt", "subset=1811"], "subset_file"),
    (["--type", "folder", "--root", "{tmp}/empty"], "folder {tmp}/empty: the dataset has 0 samples (its annotations"),
    (["--type", "iiit5k", "--root", "{tmp}/cb", "--opt", "labels=boxes.mat"],
     "boxes.mat: struct array `testCharBound` has fields ImgName, charBB; cvlab reads ImgName with GroundTruth"),
])
def test_bad_input_exits_2_with_one_line(cli, tmp_path, args, needle):
    from scipy.io import savemat

    root = make_icdar(tmp_path / "gt")
    gt = root / "Challenge2_Test_Task3_GT.txt"
    gt.write_bytes(gt.read_bytes() + b"word_7.png\r\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "gt.txt").write_text("", encoding="utf-8")  # a label file listing nothing
    boxes = np.zeros((1, 1), dtype=[("ImgName", "O"), ("charBB", "O")])  # a struct with no label field
    boxes[0, 0] = ("test/1_1.png", np.zeros((2, 4)))
    savemat(make_iiit5k_charbound(tmp_path / "cb") / "boxes.mat", {"testCharBound": boxes})
    needle = needle.format(tmp=tmp_path)
    code, out, err = cli("data", "check", *[a.format(gt=root, tmp=tmp_path) for a in args])
    assert code == 2 and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


FAMILIES = {
    "folder": (make_folder, [], ["Hello world", "Zoë", "spaced path"]),
    "lmdb": (make_lmdb, [], ["one", "Two!", "né", "b1"]),
    "ic13": (make_icdar, ["--split", "test"], ["Tiredness", "0,6", "TOUBI'S", "[falling", 'say "hi" \\o/', "ab"]),
    "iiit5k": (make_iiit5k, ["--split", "test"], ["PRIVATE", "HELLO"]),
    "svt": (make_svt, ["--split", "test"], ["DOOR", "CAFE"]),
    "iam": (make_iam, ["--opt", "level=words"], ["A", "MOVE", "to by", "B"]),
    "rimes": (make_rimes, ["--opt", "level=lines"], ["Je souhaiterais vous", 'Monsieur "X" & Cie', "café"]),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_convert_every_family_reads_back_independently(cli, tmp_path, family):
    make, args, expected = FAMILIES[family]
    root = make(tmp_path / "src")
    code, out, err = cli("data", "convert", "--type", family, "--root", root, *args, "--out", tmp_path / "out")
    assert code == 0, err
    entries = read_lmdb(tmp_path / "out")
    assert [label for _, label in entries] == expected
    for data, _ in entries:  # every image decodes
        Image.open(__import__("io").BytesIO(data)).load()
    if family == "svt":  # crops are stored as PNG of exactly the clamped box
        assert Image.open(__import__("io").BytesIO(entries[1][0])).size == (15, 20)
    if family == "folder":  # whole files keep their original bytes
        assert entries[0][0] == (root / "a" / "1.png").read_bytes()


def test_lmdb_roundtrip_is_byte_for_byte(cli, tmp_path):
    src = make_lmdb(tmp_path / "real") / "evaluation" / "A"
    assert cli("data", "convert", "--type", "lmdb", "--root", src, "--out", tmp_path / "b")[0] == 0
    assert cli("data", "convert", "--type", "lmdb", "--root", tmp_path / "b", "--out", tmp_path / "c")[0] == 0
    # the source's complete entries, in order (its label-only entry and unlabelled image are reported drops)
    original = [(img, lab.decode()) for img, lab in read_lmdb_all(src) if img is not None and lab is not None]
    assert read_lmdb(tmp_path / "b") == read_lmdb(tmp_path / "c") == original


def read_lmdb_all(folder):
    import lmdb

    from cvlab.data.formats.lmdb import close_env

    close_env(folder)  # py-lmdb allows one open environment per path and process
    env = lmdb.open(str(folder), readonly=True, lock=False)
    with env.begin() as txn:
        n = int(txn.get(b"num-samples"))
        out = [(txn.get(b"image-%09d" % i), txn.get(b"label-%09d" % i)) for i in range(1, n + 1)]
    env.close()
    return out


def test_preview_writes_a_grid(cli, tmp_path):
    code, out, err = cli("data", "preview", "--type", "svt", "--root", make_svt(tmp_path), "--out", tmp_path / "g.png")
    assert code == 0, err
    assert Image.open(tmp_path / "g.png").size[0] > 100


def test_eval_data_families_with_lexicons(cli, tmp_path, write_exp):
    """A 2-step run, then `cvlab eval --data iiit5k:ROOT:test --data rimes:...`: per-dataset rows, lexicon accuracy."""
    exp = tiny_experiment(train={"steps": 2, "eval_every": 2, "batch_size": 2, "threads": 1},
                          data={"train": [{"type": "folder", "root": str(make_folder(tmp_path / "f"))}],
                                "val": [{"type": "svt", "root": str(make_svt(tmp_path / "svt")), "split": "test"}]},
                          log={"tensorboard": False, "image_grid": 0})
    code, out, err = cli("train", write_exp(exp), "--runs-dir", tmp_path / "runs", "--name", "t")
    assert code == 0, err
    assert "folder: dropped 1: image file missing" in err and "train data: dropped 1: image unreadable" in err
    (run,) = (tmp_path / "runs" / "t").iterdir()
    root = make_iiit5k(tmp_path / "iiit")
    code, out, err = cli("eval", run, "--checkpoint", "last", "--data", f"iiit5k:{root}:test",
                         "--data", f"svt:{tmp_path / 'svt'}:test")
    assert code == 0, err
    (line,) = (json.loads(s) for s in (run / "eval" / "index.jsonl").read_text().splitlines())
    res = json.loads((run / "eval" / line["dir"] / "eval.json").read_text())
    assert set(res["datasets"]) == {"iiit5k_test", "svt_test"}
    assert (run / "eval" / line["dir"] / "svt_test.predictions.csv").is_file()
    lex = res["datasets"]["iiit5k_test"]["lexicon"]
    assert lex["50"]["samples"] == 2 and lex["1k"]["samples"] == 2
    assert res["datasets"]["svt_test"]["lexicon"]["50"]["samples"] == 2
    assert res["combined"]["samples"] == 4
    assert "iiit5k_test: lexicon-50 word acc" in err  # not a terminal: notes beside the tsv rows go to stderr + err  # notes go to stderr when stdout is not a terminal
    # roots holding a `:`: a folder has no split, so all of it is the root; `test` is a split name of ic13
    colon = make_folder(tmp_path / "scans:2024" / "f")
    ic13 = make_icdar(tmp_path / "ic:13")
    code, out, err = cli("eval", run, "--checkpoint", "last", "--data", f"folder:{colon}", "--data", f"ic13:{ic13}:test")
    assert code == 0, err
    last = json.loads((run / "eval" / "index.jsonl").read_text().splitlines()[-1])
    res = json.loads((run / "eval" / last["dir"] / "eval.json").read_text())
    assert res["datasets"]["ic13_test"]["samples"] == 6 and res["datasets"]["folder"]["samples"] == 3
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["val"][0]["type"] == "svt"


@pytest.mark.parametrize("name", ["scene_text", "iam_lines", "iam_words", "rimes_lines"])
def test_experiment_files_validate(name):
    from pathlib import Path

    from cvlab.config import load_config

    cfg = load_config(Path(__file__).parent.parent / "experiments" / f"{name}.yaml")
    assert cfg.data.test or cfg.data.val


def test_convert_synth_renders_pngs(cli, tmp_path):
    code, _, err = cli("data", "convert", "--type", "synth", "--opt", "size=3", "--out", tmp_path / "s")
    assert code == 0, err
    entries = read_lmdb(tmp_path / "s")
    assert len(entries) == 3 and all(e[0].startswith(b"\x89PNG") and e[1] for e in entries)
