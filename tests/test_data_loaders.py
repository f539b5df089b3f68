"""Every family read from a fixture in its real on-disk form: exact labels, crops, and what gets reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import (
    make_folder,
    make_iam,
    make_icdar,
    make_iiit5k,
    make_iiit5k_charbound,
    make_lmdb,
    make_rimes,
    make_svt,
    page_array,
)
from PIL import Image

from cvlab.config import DataCfg, parse_data_spec
from cvlab.data.charset import PRESETS
from cvlab.data.formats.base import Broken
from cvlab.data.loaders import build_dataset, collate, eval_loader, named_datasets, report_of
from cvlab.errors import CvlabError

DATA = DataCfg()
CHARS = PRESETS["lower36"]


def build(text: str, *opts: str):
    return build_dataset(parse_data_spec(text, list(opts)), CHARS, DATA)


def labels(ds) -> list[str]:
    return [ds.label(i) for i in range(len(ds))]


def test_folder(tmp_path):
    ds = build(f"folder:{make_folder(tmp_path)}")
    assert labels(ds) == ["Hello world", "Zoë", "trunc", "spaced path"]
    rep = ds.report
    assert rep.dropped["image file missing"] == 1 and "missing.png" in rep.examples["image file missing"][0]
    assert any("no tab" in n for n in rep.notes)
    # "H" folds to "h" (the charset has no capitals), so it is not lost; space and "ë" are
    assert "H" not in rep.outside_charset and rep.outside_charset[" "] == 2 and rep.outside_charset["ë"] == 1
    image, label = ds[0]
    assert image.shape == (1, 32, 100) and label == "Hello world"
    broken, label = ds[2]
    assert isinstance(broken, Broken) and "broken.jpg" in broken.source and label == "trunc"
    # the collate function drops the broken sample and says so; the loader counts it
    images, labs = collate([ds[0], ds[2], ds[3]])
    assert images.shape[0] == 2 and labs == ["Hello world", "spaced path"] and len(labs.dropped) == 1
    loader = eval_loader(ds, 3, workers=0)
    assert sum(len(lab) for _, lab in loader) == 3
    assert loader.load_report.dropped["image unreadable at load time"] == 1
    assert loader.new_problems() and not loader.new_problems()  # reported once


def test_lmdb_tree_label_only_and_parts(tmp_path):
    root = make_lmdb(tmp_path)
    ds = build(f"lmdb:{root}")
    assert labels(ds) == ["one", "Two!", "né", "b1", "trunc"]
    assert ds.report.dropped["LMDB entry without image (label only)"] == 1
    assert ds.report.dropped["LMDB entry without label"] == 1
    assert np.array_equal(np.asarray(ds.load(0)), page_array(10, 8, 1))
    assert isinstance(ds[4][0], Broken)
    sets = named_datasets([parse_data_spec(f"lmdb:{root}")], CHARS, DATA)
    assert {k: len(v) for k, v in sets.items()} == {"evaluation_A": 3, "evaluation_B": 2}
    # each folder reports its own drops (evaluation prints one row and one report per folder)
    assert report_of(sets["evaluation_A"]).total_dropped == 2 and report_of(sets["evaluation_B"]).total_dropped == 0
    assert report_of(sets["evaluation_A"]).outside_charset == {"!": 1, "é": 1}  # "T" folds to "t"
    assert len(build(f"lmdb:{root}:evaluation/B")) == 2


@pytest.mark.parametrize("family", ["ic13", "ic15"])
def test_icdar_quotes_commas_escapes(tmp_path, family):
    root = make_icdar(tmp_path, family)
    ds = build(f"{family}:{root}:test")
    assert labels(ds) == ["Tiredness", "0,6", "TOUBI'S", "[falling", 'say "hi" \\o/', "ab"]
    assert ds.load(0).size == (20, 12)


def test_ic13_subsets_are_rules_and_counted(tmp_path):
    root = make_icdar(tmp_path)
    assert labels(build(f"ic13:{root}:test", "subset=1015")) == ["Tiredness", "ab"]
    ds = build(f"ic13:{root}:test", "subset=857")
    assert labels(ds) == ["Tiredness"]
    assert ds.report.dropped["excluded by the subset 857 rule"] == 5
    (tmp_path / "keep.txt").write_text("word_2.png\nword_6.png\n")
    assert labels(build(f"ic15:{make_icdar(tmp_path / 'x', 'ic15')}:test", "subset=1811",
                        f"subset_file={tmp_path / 'keep.txt'}")) == ["0,6", "ab"]


def test_iiit5k_mat_struct_array_and_lexicons(tmp_path):
    ds = build(f"iiit5k:{make_iiit5k(tmp_path)}:test")
    assert labels(ds) == ["PRIVATE", "HELLO"]
    assert ds.lexicons(1) == {"50": ["PRIVATE", "HELLO", "WORLD"], "1k": ["PRIVATE", "HELLO", "WORLD", "HELP"]}
    assert ds.report.dropped["image file missing"] == 1
    assert ds.load(1).size == (32, 12)


def test_iiit5k_charbound_file_gives_its_chars_as_labels(tmp_path):
    """`--opt labels=testCharBound.mat`: the character-box file has `chars` (the word as written) where
    testdata.mat has GroundTruth, and no lexicons."""
    ds = build(f"iiit5k:{make_iiit5k_charbound(tmp_path)}:test", "labels=testCharBound.mat")
    assert labels(ds) == ["Private", "HELLO"]
    assert ds.lexicons(0) is None and ds.report.dropped["image file missing"] == 1
    assert any("labels from `chars` of testCharBound.mat" in n for n in ds.report.notes)
    assert ds.load(0).size == (30, 12)


def test_iiit5k_struct_without_a_label_field_names_what_it_has(tmp_path):
    from scipy.io import savemat

    root = make_iiit5k_charbound(tmp_path)
    arr = np.zeros((1, 1), dtype=[("ImgName", "O"), ("charBB", "O")])
    arr[0, 0] = ("test/1_1.png", np.zeros((2, 4)))
    savemat(root / "boxes.mat", {"testCharBound": arr})
    with pytest.raises(CvlabError) as e:
        build(f"iiit5k:{root}:test", "labels=boxes.mat")
    msg = str(e.value)
    assert "boxes.mat" in msg and "has fields ImgName, charBB" in msg and "GroundTruth" in msg and "chars" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("text, root, split", [
    ("folder:/x/a:b", "/x/a:b", None),  # a folder has no split: everything after the type is the root
    ("ic13:/x/a:b:test", "/x/a:b", "test"),  # the last part is a split name of ic13
    ("svt:/x/a:b", "/x/a:b", "test"),  # `b` is no split of svt: part of the root (the split is the default)
    ("rimes:/x/y:val", "/x/y", "val"),
    ("lmdb:{tmp}/trees:A", "{tmp}/trees", "A"),  # the root exists, `root:A` does not: A is the sub-folder
    ("lmdb:{tmp}/scans:2024", "{tmp}/scans:2024", None),  # the whole path exists, its head does not
    ("svt:{tmp}/trees:tset", "{tmp}/trees", "tset"),  # a misspelt split, said as such by validation
])
def test_data_spec_root_may_hold_a_colon(tmp_path, text, root, split):
    (tmp_path / "trees").mkdir()
    (tmp_path / "scans:2024").mkdir()
    if split == "tset":
        with pytest.raises(CvlabError, match=r"split: Input should be 'train' or 'test'"):
            parse_data_spec(text.format(tmp=tmp_path))
        return
    spec = parse_data_spec(text.format(tmp=tmp_path))
    assert spec.root == root.format(tmp=tmp_path) and getattr(spec, "split", None) == split


def test_data_spec_ambiguous_colon_says_how_to_write_it(tmp_path):
    with pytest.raises(CvlabError) as e:
        parse_data_spec(f"lmdb:{tmp_path}/nope:A")
    msg = str(e.value)
    assert f"neither {tmp_path}/nope:A nor {tmp_path}/nope exists" in msg and "--opt root=PATH" in msg
    # the key form needs no parsing at all
    spec = parse_data_spec("lmdb", [f"root={tmp_path}/nope:A", "split=B"])
    assert spec.root == f"{tmp_path}/nope:A" and spec.split == "B"


def test_svt_crops_clamped_and_counted(tmp_path):
    ds = build(f"svt:{make_svt(tmp_path)}:test")
    assert labels(ds) == ["DOOR", "CAFE"]
    assert ds.lexicons(0) == {"50": ["DOOR", "CAFE", "PUB"]}
    assert ds.items[0].box == (5, 4, 25, 14) and ds.items[1].box == (45, 20, 60, 40)
    assert ds.load(1).size == (15, 20)
    assert ds.report.adjusted["box clamped to the image"] == 1
    assert ds.report.dropped["box empty after clamping to the image"] == 1


def test_iam_words_header_trap_err_rows_and_broken(tmp_path):
    root = make_iam(tmp_path)
    ds = build(f"iam:{root}", "level=words")
    assert labels(ds) == ["A", "MOVE", "to by", "B"]  # the 9th field on: a transcription may hold a space
    assert ds.report.dropped["known broken IAM word image"] == 1
    strict = build(f"iam:{root}", "level=words", "keep_err=false")
    assert labels(strict) == ["A", "to by", "B"]


def test_iam_lines_and_splits(tmp_path):
    root = make_iam(tmp_path)
    ds = build(f"iam:{root}:test", "level=lines", f"splits_dir={root / 'splits'}")
    assert labels(ds) == ["A MOVE to stop Mr. Gaitskell from", "nominating any more Labour"]  # err line kept
    by_form = build(f"iam:{root}:forms", "level=words", f"splits_dir={root / 'splits'}")
    assert labels(by_form) == ["B"]


def test_rimes_lines_boxes_entities_spaces(tmp_path):
    root = make_rimes(tmp_path)
    ds = build(f"rimes:{root}:test", "level=lines")
    assert labels(ds) == ["Je souhaiterais vous", 'Monsieur "X" & Cie', "café"]
    assert [it.box for it in ds.items] == [(0, 2, 30, 20), (40, 10, 50, 30), (0, 32, 60, 38)]
    crop = np.asarray(ds.load(1).convert("L"))
    assert np.array_equal(crop, page_array(60, 40)[10:30, 40:50])
    r = ds.report
    assert r.adjusted["box clamped to the page"] == 2 and r.adjusted["inverted box (corners swapped)"] == 1
    assert r.adjusted["runs of spaces collapsed / ends trimmed"] == 2 and r.adjusted["entities decoded"] == 1
    assert r.dropped["empty label"] == 1


def test_rimes_words_bom_and_misspelt_file(tmp_path):
    ds = build(f"rimes:{make_rimes(tmp_path)}:test", "level=words")
    assert labels(ds) == ["Madame", "été"]  # paths relative to data_test/; a TIFF is fine
    assert ds.report.dropped["image file missing"] == 1 and ds.load(0).size == (16, 10)


def test_image_policy_keep_ratio_and_rgb(tmp_path):
    data = DataCfg(image={"height": 16, "width": 64, "channels": 3, "resize": "keep_ratio"})
    ds = build_dataset(parse_data_spec(f"folder:{make_folder(tmp_path)}"), CHARS, data)
    t, _ = ds[0]  # 30×10 -> 48×16, padded to 64
    assert t.shape == (3, 16, 64) and torch.equal(t[:, :, 48:], t[:, :, 47:48].expand(3, 16, 16))


@pytest.mark.parametrize("text, needle", [
    ("ic13:{root}:test", "Challenge2_Test_Task3_GT.txt"), ("iam:{root}", "ascii/lines.txt"),
    ("svt:{root}", "test.xml"), ("iiit5k:{root}", "testdata.mat"), ("lmdb:{root}", "data.mdb"),
    ("rimes:{root}", "eval_2011_annotated.xml"), ("folder:{root}", "gt.txt"),
])
def test_missing_annotation_names_the_layout(tmp_path, text, needle):
    with pytest.raises(CvlabError) as e:
        build(text.format(root=tmp_path))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_malformed_lines_strict_and_lenient(tmp_path):
    root = make_icdar(tmp_path)
    gt = root / "Challenge2_Test_Task3_GT.txt"
    gt.write_bytes(gt.read_bytes() + b"word_7.png Tired\r\n")
    with pytest.raises(CvlabError, match=r"Challenge2_Test_Task3_GT.txt:7: expected"):
        build(f"ic13:{root}:test")
    ds = build(f"ic13:{root}:test", "strict=false")
    assert len(ds) == 6 and ds.report.dropped["malformed annotation"] == 1
    (tmp_path / "ascii").mkdir()
    (tmp_path / "ascii" / "lines.txt").write_text("# c\na01-000u-00 ok 154 19 408\n")
    with pytest.raises(CvlabError, match=r"lines.txt:2: expected at least 9"):
        build(f"iam:{tmp_path}")


def test_index_never_decodes(tmp_path, monkeypatch):
    root = make_folder(tmp_path)
    monkeypatch.setattr(Image.Image, "load", lambda self: (_ for _ in ()).throw(AssertionError("decoded")))
    assert len(build(f"folder:{root}")) == 4


def test_rimes_html_entities_are_not_xml_but_decoded(tmp_path):
    root = make_rimes(tmp_path)
    (root / "training_2011.xml").write_bytes(
        b'<?xml version="1.0" encoding="iso-8859-1"?>\n<DocumentList><SinglePage FileName="images/eval2011-1.png">'
        b'<Paragraph><Line Bottom="20" Left="0" Right="30" Top="2" Value="d&eacute;j&agrave; \xe9t\xe9"/>'
        b'</Paragraph></SinglePage></DocumentList>')
    assert labels(build(f"rimes:{root}:train", "level=lines")) == ["déjà été"]


@pytest.mark.parametrize("family, folder", [("ic13", "Challenge2_Training_Task3_Images_GT"),
                                            ("ic15", "ch4_training_word_images_gt")])
def test_icdar_training_folder_with_its_gt(tmp_path, family, folder):
    from data_fixtures import png

    png(tmp_path / folder / "word_1.png", 10, 10)
    png(tmp_path / folder / "word_2.png", 10, 10)
    (tmp_path / folder / "gt.txt").write_bytes(b'\xef\xbb\xbfword_1.png, "PROPER"\r\nword_2.png, "FOOD,"\r\n')
    (tmp_path / folder / "coords.txt").write_text("word_1.png,1,2,3,4,5,6,7,8\n")  # beside it; not needed
    assert labels(build(f"{family}:{tmp_path}:train")) == ["PROPER", "FOOD,"]


def test_iam_split_given_as_a_path(tmp_path):
    root = make_iam(tmp_path)
    ds = build(f"iam:{root}", "level=lines", f"split={root / 'splits' / 'forms.txt'}")
    assert labels(ds) == ["other form"]
    assert any("1 ids listed, 1 found" in n for n in ds.report.notes)
