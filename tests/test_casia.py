"""CASIA-HWDB as downloaded: `.gnt` records and `.dgrl` pages written byte by byte in their real layouts
(tests/data_fixtures.py), read back with exact labels and pixels; garbage codes counted; malformed files one line
naming the file and the byte offset."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
from data_fixtures import (
    CASIA_DGRL,
    CASIA_DGRL_LABELS,
    CASIA_GNT,
    CASIA_GNT_LABELS,
    dgrl_page,
    gnt_record,
    make_casia_dgrl,
    make_casia_gnt,
    page_array,
    read_lmdb,
)
from PIL import Image

from cvlab.config import DataCfg, parse_data_spec
from cvlab.data.charset import resolve_charset
from cvlab.data.formats.casia import decode_code
from cvlab.data.loaders import build_dataset, eval_loader
from cvlab.errors import CvlabError

CHARS = resolve_charset("gb2312-l1")
DATA = DataCfg(charset="gb2312-l1")
GNT_DROP_GARBAGE = "garbage mark 0xFFFF (not a character; not used)"
GNT_DROP_CODE = "code not GB2312/GBK (not a character; not used)"


def build(text: str, *opts: str):
    return build_dataset(parse_data_spec(text, list(opts)), CHARS, DATA)


def labels(ds) -> list[str]:
    return [ds.label(i) for i in range(len(ds))]


def kept_gnt(rels=None) -> list[tuple[int, int, int]]:
    """(w, h, value) of the records the reader keeps, in file order."""
    return [(w, h, v) for rel, recs in CASIA_GNT.items() if rels is None or rel in rels
            for code, w, h, v in recs if decode_code(code) is not None]


def kept_dgrl() -> list[tuple[int, int, int]]:
    return [(w, h, v) for lines in CASIA_DGRL.values() for codes, _, _, w, h, v in lines
            if any(decode_code(c) for c in codes)]


# --------------------------------------------------------------------------------------------- .gnt

def test_gnt_labels_pixels_and_report(tmp_path):
    ds = build(f"casia_gnt:{make_casia_gnt(tmp_path)}")
    assert labels(ds) == CASIA_GNT_LABELS
    for i, (w, h, v) in enumerate(kept_gnt()):
        assert np.array_equal(ds.bitmap(i), page_array(w, h, v))  # the bitmap as stored, odd widths included
        assert np.array_equal(np.asarray(ds.load(i)), page_array(w, h, v))
    image, label = ds[0]
    assert image.shape == (1, 32, 100) and label == "啊"
    rep = ds.report
    assert rep.samples == 6 and rep.dropped[GNT_DROP_GARBAGE] == 1 and rep.dropped[GNT_DROP_CODE] == 1
    assert rep.examples[GNT_DROP_GARBAGE] == ["1001-c.gnt offset 30: 0xFFFF"]  # after the 10 + 5×4 bytes of 啊
    assert rep.examples[GNT_DROP_CODE] == ["1002-c.gnt offset 0: 0xA1FF"]
    assert rep.outside_charset == {"丂": 1, "亍": 1, "７": 1}  # GBK-only, level 2, a symbol: kept, counted
    assert any("3 .gnt files, 6 samples" in n for n in rep.notes)
    assert ds.source(1).endswith("1001-c.gnt offset 49") and ds.group_key(1, "writer") == "1001"


def test_gnt_split_file_and_nested_folders(tmp_path):
    root = make_casia_dgrl(make_casia_gnt(tmp_path / "casia"))  # HWDB1 and HWDB2 unpacked side by side
    train = build(f"casia_gnt:{root}:train")
    assert labels(train) == CASIA_GNT_LABELS[:5] and "split train: HWDB1.1trn_gnt" in train.report.notes
    assert labels(build(f"casia_gnt:{root}:test")) == ["啊"]
    assert labels(build(f"casia_gnt:{root}/HWDB1.1tst_gnt:test")) == ["啊"]  # root named for the split itself
    one = build(f"casia_gnt:{root}/HWDB1.1trn_gnt/1002-c.gnt")
    assert labels(one) == ["座", "７"] and np.array_equal(one.bitmap(1), page_array(3, 5, 250))
    deep = tmp_path / "deep" / "a" / "b"
    shutil.copytree(root / "HWDB1.1trn_gnt", deep)
    assert labels(build(f"casia_gnt:{tmp_path / 'deep'}")) == CASIA_GNT_LABELS[:5]  # any depth, sorted
    with pytest.raises(CvlabError, match=r"no folder named \*tst\* or \*test\*"):
        build(f"casia_gnt:{tmp_path / 'deep'}:test")
    with pytest.raises(CvlabError, match=r"no \*\.gnt file below it"):
        build(f"casia_gnt:{make_casia_dgrl(tmp_path / 'lines')}")


def test_bitmaps_are_read_lazily_through_each_process_own_handles(tmp_path):
    root = make_casia_gnt(tmp_path)
    ds = build(f"casia_gnt:{root}")
    path = root / "HWDB1.1tst_gnt" / "1241-c.gnt"
    path.write_bytes(gnt_record(b"\xb0\xa1", np.full((2, 3), 7)))  # same layout, new pixels: read on access
    assert np.array_equal(ds.bitmap(5), np.full((2, 3), 7))
    copy = pickle.loads(pickle.dumps(ds))  # spawn workers: no handle travels
    assert copy._handles == {} and np.array_equal(copy.bitmap(0), page_array(5, 4, 10))
    batches = list(eval_loader(ds, 2, workers=2))  # forked workers open their own
    assert [lab for _, labs in batches for lab in labs] == CASIA_GNT_LABELS


def _gnt_file(tmp_path, data: bytes):
    (tmp_path / "g").mkdir()
    path = tmp_path / "g" / "1001-c.gnt"
    path.write_bytes(data)
    return path


GOOD = gnt_record(b"\xb0\xa1", page_array(5, 4, 10))  # 30 bytes


@pytest.mark.parametrize("data, offset, why", [
    (GOOD + GOOD[:-3], 30, "the file ends inside a record of 30 bytes (27 left)"),
    (GOOD + GOOD[:6], 30, "the file ends inside a record header (6 of 10 bytes left)"),
    (GOOD + (31).to_bytes(4, "little") + GOOD[4:], 30, "record size 31 is not 10 + width 5 × height 4 = 30"),
    (b"\xef\xbb\xbf" + GOOD, 0, "record size"),  # a BOM in front: the size field is garbage
])
def test_gnt_malformed_is_one_line_naming_file_and_offset(tmp_path, data, offset, why):
    path = _gnt_file(tmp_path, data)
    with pytest.raises(CvlabError) as e:
        build(f"casia_gnt:{path.parent}")
    msg = str(e.value)
    assert msg.startswith(f"{path}: offset {offset}: ") and why in msg and "\n" not in msg
    if not offset:  # nothing before the fault: a dataset of 0 samples, said with the reason
        with pytest.raises(CvlabError, match=r"0 samples.*malformed file \(the rest of it skipped"):
            build(f"casia_gnt:{path.parent}", "strict=false")
        return
    lenient = build(f"casia_gnt:{path.parent}", "strict=false")  # the records before the fault are kept
    assert labels(lenient) == ["啊"]
    assert lenient.report.examples["malformed file (the rest of it skipped; strict: false)"][0].startswith(
        f"1001-c.gnt offset {offset}: ")


def test_empty_gnt_file_and_zero_sized_bitmap(tmp_path):
    path = _gnt_file(tmp_path, b"")
    with pytest.raises(CvlabError, match="has 0 samples"):
        build(f"casia_gnt:{path}")
    path.write_bytes(gnt_record(b"\xb0\xa1", np.zeros((0, 4))) + GOOD)
    ds = build(f"casia_gnt:{path}")
    assert len(ds) == 1 and ds.report.dropped["empty bitmap (width or height 0)"] == 1


# --------------------------------------------------------------------------------------------- .dgrl

def test_dgrl_lines_labels_pixels_and_garbage_marks(tmp_path):
    ds = build(f"casia_dgrl:{make_casia_dgrl(tmp_path)}")
    assert labels(ds) == CASIA_DGRL_LABELS
    for i, (w, h, v) in enumerate(kept_dgrl()):
        assert np.array_equal(ds.bitmap(i), page_array(w, h, v))  # widths 7, 5, 1, 5: no row padding
    rep = ds.report
    assert rep.adjusted["garbage mark 0xFFFF removed from the label (line kept)"] == 1
    assert rep.adjusted["code not GB2312/GBK removed from the label (line kept)"] == 1
    assert rep.examples["garbage mark 0xFFFF removed from the label (line kept)"] == [
        "001-P16.dgrl line 2 (offset 116): 1 in '座啊'"]
    assert rep.dropped["empty label (only codes that are no character)"] == 1
    assert "label codes that are no character, removed from line labels: 3 garbage marks 0xFFFF, 1 codes not " \
           "GB2312/GBK" in rep.notes  # the empty line's two marks included
    assert rep.outside_charset == {"，": 1, "2": 1, "丂": 1, "亍": 1}
    assert ds.source(2).endswith("001-P16.dgrl line 2")
    assert ds.group_key(0, "writer") == "002" and ds.group_key(3, "page").endswith("001-P16.dgrl")
    assert labels(build(f"casia_dgrl:{tmp_path}:train")) == CASIA_DGRL_LABELS[1:]
    assert labels(build(f"casia_dgrl:{tmp_path}:test")) == CASIA_DGRL_LABELS[:1]


def test_dgrl_garbage_lines_drop(tmp_path):
    ds = build(f"casia_dgrl:{make_casia_dgrl(tmp_path)}", "garbage_lines=drop")
    assert labels(ds) == ["啊，2丂", "亍"]  # the line with a garbage mark and the one with a bad code: dropped
    assert ds.report.dropped["label holds codes that are no character (garbage_lines: drop)"] == 3


def _line(codes, w, h, v=0):
    return (codes, 1, 2, page_array(w, h, v))


PAGE = dgrl_page([_line([b"\xb0\xa1"], 3, 2), _line([b"\xd7\xf9", b"\xb0\xa1"], 5, 3)])
HEAD = 36 + len(b"CASIA-HWDB2.0 \xd7\xd6\xd0\xd0\x00")  # 55: where the page size starts


@pytest.mark.parametrize("data, offset, why", [
    (PAGE[:-1], HEAD + 12 + 4 + 2 + 16 + 6 + 4 + 4 + 16, "the file ends inside line 2's 5×3 bitmap (14 of 15"),
    (PAGE[:HEAD + 12 + 4 + 1], HEAD + 12 + 4, "the file ends inside line 1's 1 label codes (1 of 2"),
    (PAGE[:4] + b"DGRX" + PAGE[8:], 4, "format code b'DGRX"),
    ((20).to_bytes(4, "little") + PAGE[4:], 0, "header size 20 is less than the 36 bytes"),
    (dgrl_page([], code_length=0), HEAD - 4, "code length 0"),
    (dgrl_page([], bpp=1), HEAD - 2, "1 bits per pixel"),
    (PAGE[:HEAD + 12] + (10**9).to_bytes(4, "little") + PAGE[HEAD + 16:], HEAD + 16,
     "line 1's 1000000000 label codes"),  # a corrupt count: refused before anything is allocated
    (PAGE[:HEAD + 8] + (3).to_bytes(4, "little") + PAGE[HEAD + 12:], len(PAGE), "line 3's number of characters"),
    (b"", 0, "the header size (0 of 4"),
])
def test_dgrl_malformed_is_one_line_naming_file_and_offset(tmp_path, data, offset, why):
    (tmp_path / "p").mkdir()
    path = tmp_path / "p" / "001-P1.dgrl"
    path.write_bytes(data)
    with pytest.raises(CvlabError) as e:
        build(f"casia_dgrl:{tmp_path / 'p'}")
    msg = str(e.value)
    assert msg.startswith(f"{path}: offset {offset}: ") and why in msg and "\n" not in msg, msg


def test_dgrl_trailing_bytes_are_said(tmp_path):
    path = tmp_path / "001-P1.dgrl"
    path.write_bytes(PAGE + b"\x00\x00\x00")
    ds = build(f"casia_dgrl:{path}")
    assert labels(ds) == ["啊", "座啊"]
    assert any("bytes after the last line ignored in 1 files" in n and "3 bytes" in n for n in ds.report.notes)


# --------------------------------------------------------------------------------------------- CLI

@pytest.mark.parametrize("kind, maker, samples, needle", [
    ("casia_gnt", make_casia_gnt, 6, "dropped 1: garbage mark 0xFFFF (not a character; not used)"),
    ("casia_dgrl", make_casia_dgrl, 4, "adjusted 1: garbage mark 0xFFFF removed from the label (line kept)"),
])
def test_data_check_end_to_end(cli, tmp_path, kind, maker, samples, needle):
    root = maker(tmp_path / "casia")
    code, out, err = cli("data", "check", "--type", kind, "--root", root, "--charset", "gb2312-l1")
    assert code == 0, err
    assert f"{samples} samples, {samples} images decoded" in out and needle in out, out
    code, out, err = cli("data", "check", "--type", kind, "--root", root, "--split", "test")
    assert code == 0 and "split test:" in out, err


@pytest.mark.parametrize("kind, maker, rel", [
    ("casia_gnt", make_casia_gnt, "HWDB1.1trn_gnt/1002-c.gnt"),
    ("casia_dgrl", make_casia_dgrl, "HWDB2.0Test/002-P17.dgrl"),
])
def test_data_check_malformed_file_is_exit_2_one_line(cli, tmp_path, kind, maker, rel):
    root = maker(tmp_path / "casia")
    path = root / rel
    path.write_bytes(path.read_bytes()[:-1])
    code, out, err = cli("data", "check", "--type", kind, "--root", root)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and str(path.name) in lines[0] and "offset" in lines[0], err
    assert "Traceback" not in err


def test_convert_to_lmdb_keeps_labels_and_pixels(cli, tmp_path):
    root = make_casia_dgrl(tmp_path / "casia")
    code, _, err = cli("data", "convert", "--type", "casia_dgrl", "--root", root, "--out", tmp_path / "lmdb")
    assert code == 0, err
    entries = read_lmdb(tmp_path / "lmdb")
    assert [lab for _, lab in entries] == CASIA_DGRL_LABELS
    import io

    for (img, _), (w, h, v) in zip(entries, kept_dgrl(), strict=True):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(img))), page_array(w, h, v))
