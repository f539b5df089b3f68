"""Nothing dropped silently, in every command that reads data: `data convert` prints the dataset's report as
check and eval do; labels the charset cannot write are dropped from training and counted (a training set left
with none is an error naming it and the charset); "0 samples" names the YAML key and the path; `lm build` says
what it is reading."""

from __future__ import annotations

from pathlib import Path

from conftest import tiny_experiment
from data_fixtures import make_folder, make_svt, png

from cvlab.config import DataCfg, load_config, parse_data_spec
from cvlab.data.charset import PRESETS
from cvlab.data.loaders import build_dataset, datasets_for, report_lines, report_of


def _indented(err: str) -> list[str]:
    return [line.strip() for line in err.splitlines() if line.startswith("  ")]


def test_convert_prints_the_report_that_check_and_eval_print(cli, tmp_path):
    """SVT: a box that leaves the image is dropped, one is clamped; folder: a missing and a broken image."""
    cases = (("svt", make_svt(tmp_path / "svt"), ["--split", "test"], 1,
              ["dropped 1: box empty after clamping to the image", "adjusted 1: box clamped to the image"]),
             ("folder", make_folder(tmp_path / "f"), [], 2,
              ["dropped 1: image file missing", "dropped 1: image unreadable (not written)"]))
    for kind, root, args, left_out, reasons in cases:
        code, out, err = cli("data", "convert", "--type", kind, "--root", root, *args, "--out", tmp_path / kind)
        assert code == 0, err
        assert f"({left_out} left out: see the report above)" in out
        lines = _indented(err)
        assert all(any(line.startswith(r) for line in lines) for r in reasons), err
        # the dataset's own report lines, exactly as evaluation prints them (without the charset lines: convert
        # writes labels as they are), before what convert itself found undecodable
        spec = parse_data_spec(f"{kind}:{root}" + (":test" if args else ""))
        shown = [line for line in report_lines(build_dataset(spec, PRESETS["lower36"], DataCfg()))
                 if "charset" not in line]
        assert shown and lines[:len(shown)] == shown


def _words(root: Path, labels: list[str]) -> Path:
    for i in range(len(labels)):
        png(root / f"{i}.png", 40, 12)
    (root / "gt.txt").write_text("".join(f"{i}.png\t{w}\n" for i, w in enumerate(labels)), encoding="utf-8")
    return root


def test_labels_the_charset_cannot_write_are_dropped_from_training_and_counted(tmp_path):
    root = _words(tmp_path / "w", ["ラーメン", "Tokyo", "寿司", "kyoto"])
    cfg = load_config(raw=tiny_experiment(data={"train": [{"type": "folder", "root": str(root)}],
                                                "val": [{"type": "folder", "root": str(root)}]}))
    (name, train), = datasets_for(cfg, "train").items()
    assert [train[i][1] for i in range(len(train))] == ["Tokyo", "kyoto"]
    rep = report_of(train)
    assert rep.dropped["label has no character in the charset lower36"] == 2
    assert any(line.startswith("dropped 2: label has no character in the charset lower36") and "ラーメン" in line
               for line in report_lines(train))
    # evaluation scores every label as it is (a protocol decides), and the report says how many cannot be read
    (val,) = datasets_for(cfg, "val").values()
    assert len(val) == 4 and report_of(val).unwritable == 2
    assert any(line.startswith("2 labels have no character in the charset") for line in report_lines(val))


def test_a_training_set_the_charset_cannot_write_is_an_error(cli, tmp_path, write_exp):
    root = _words(tmp_path / "jp", ["ラーメン", "寿司", "東京"])
    exp = tiny_experiment(data={"train": [{"type": "synth", "size": 8, "max_len": 5, "style": "plain"},
                                          {"type": "folder", "root": str(root)}]})
    code, out, err = cli("train", write_exp(exp), "--runs-dir", tmp_path / "runs")
    assert code == 2, err
    (line,) = [s for s in err.strip().splitlines() if s.startswith("error:")]
    assert f"data.train[1] (folder {root}): none of its 3 labels has a character in the charset lower36" in line
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
    exp["data"].update(charset={"chars": "ラーメン寿司東京"}, train=exp["data"]["train"][1:])  # a charset that writes them
    (ds,) = datasets_for(load_config(raw=exp), "train").values()
    assert len(ds) == 3 and not report_of(ds).dropped


def test_zero_samples_names_the_yaml_key_and_the_path(cli, tmp_path, write_exp):
    root = tmp_path / "empty"
    root.mkdir()
    (root / "gt.txt").write_text("", encoding="utf-8")
    exp = tiny_experiment(data={"val": [{"type": "synth", "size": 4, "style": "plain"},
                                        {"type": "folder", "root": str(root)}]})
    for args in (("data", "check"), ("train",)):
        code, out, err = cli(*args, write_exp(exp), *(("--runs-dir", tmp_path / "runs") if args == ("train",) else ()))
        assert code == 2, err
        assert f"data.val[1] (folder {root}): the dataset has 0 samples (its annotations list none)" in err, err
        assert "Traceback" not in err
    (root / "gt.txt").write_text("gone.png\tword\n", encoding="utf-8")  # the reason, when there is one
    code, out, err = cli("data", "check", "--type", "folder", "--root", root)
    assert code == 2 and f"folder {root}: the dataset has 0 samples (dropped 1: image file missing" in err


def test_lm_build_reports_what_it_reads(cli, tmp_path, write_exp):
    root = _words(tmp_path / "w", ["ラーメン", "Tokyo"])
    exp = tiny_experiment(data={"train": [{"type": "synth", "size": 20, "max_len": 5, "style": "plain"},
                                          {"type": "folder", "root": str(root)}]})
    code, out, err = cli("lm", "build", write_exp(exp), "--order", "2", "--out", tmp_path / "e.arpa")
    assert code == 0, err
    assert "reading the labels of synth (20 samples)" in err and "synth: 18 of 20 labels read" in err
    assert "reading the labels of folder (1 samples)" in err
    assert "folder: dropped 1: label has no character in the charset lower36" in err
    assert "counting the n-grams of 21 labels" in err and "21 labels" in out
    assert "ラ" not in (tmp_path / "e.arpa").read_text(encoding="utf-8")  # the dropped label taught it nothing
    # a label file folded to a charset: a label left with no character is left out and counted, not learned empty
    (tmp_path / "labels.txt").write_text("img\tHello\nラーメン\n", encoding="utf-8")
    code, out, err = cli("lm", "build", tmp_path / "labels.txt", "--charset", "lower36", "--order", "2",
                         "--out", tmp_path / "l.arpa")
    assert code == 0, err
    assert f"reading labels: {tmp_path / 'labels.txt'}" in err
    assert "1 label," in out and "1 label with no character in it left out" in out
