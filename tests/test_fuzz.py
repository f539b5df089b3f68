"""Mangled annotation files in every supported format load, or fail as a CvlabError (one line, exit 2): never any
other exception. Each case starts from the real on-disk fixture (tests/data_fixtures.py), mangles one of its
annotation files 1-3 times (truncation, byte flips, deleted/duplicated/swapped lines, other encodings, BOM,
CRLF/CR, huge/negative/NaN numbers, missing fields, empty files; binary files such as CASIA's `.gnt`/`.dgrl`
also get a size, count or code field overwritten) and loads it the way `cvlab data check` and training do.
CVLAB_FUZZ_N (default 200) sets the number of cases over all formats; a case is reproduced by its id (format,
number): the mutations are seeded by it."""

from __future__ import annotations

import os
import random
import re
import shutil
import traceback
from pathlib import Path

import pytest
from data_fixtures import (
    make_casia_dgrl,
    make_casia_gnt,
    make_folder,
    make_iam,
    make_icdar,
    make_iiit5k,
    make_iiit5k_charbound,
    make_rimes,
    make_svt,
    png_bytes,
    write_lmdb,
)

from cvlab.config import DataCfg, parse_data_spec
from cvlab.data.check import check_dataset
from cvlab.data.formats.lmdb import close_env
from cvlab.data.loaders import build_dataset, eval_loader, named_datasets, report_lines
from cvlab.errors import CvlabError

N = int(os.environ.get("CVLAB_FUZZ_N", "200"))
CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
DATA = DataCfg(image={"height": 16, "width": 32})

# format -> (fixture maker, spec, --opt items, annotation files a case may mangle)
FORMATS = {
    "folder": (make_folder, "folder:{root}", [], ["gt.txt"]),
    "iiit5k": (make_iiit5k, "iiit5k:{root}:test", [], ["testdata.mat"]),
    "iiit5k_charbound": (make_iiit5k_charbound, "iiit5k:{root}:test", ["labels=testCharBound.mat"],
                         ["testCharBound.mat"]),
    "svt": (make_svt, "svt:{root}:test", [], ["test.xml"]),
    "ic13": (lambda r: make_icdar(r, "ic13"), "ic13:{root}:test", [], ["Challenge2_Test_Task3_GT.txt"]),
    "ic15": (lambda r: make_icdar(r, "ic15"), "ic15:{root}:test", [], ["Challenge4_Test_Task3_GT.txt"]),
    "iam_words": (make_iam, "iam:{root}", ["level=words"], ["ascii/words.txt"]),
    "iam_lines": (make_iam, "iam:{root}:test", ["level=lines", "splits_dir={root}/splits"],
                  ["ascii/lines.txt", "splits/testset.txt"]),
    "rimes_lines": (make_rimes, "rimes:{root}:test", ["level=lines"], ["eval_2011_annotated.xml"]),
    "rimes_words": (make_rimes, "rimes:{root}:test", ["level=words"], ["grount_truth_test_icdar2011.txt"]),
    "lmdb": (None, "lmdb:{root}", [], ["data.mdb (contents)"]),
    # binary files: the data file is its own annotation (also mangled field-wise: sizes, counts, codes)
    "casia_gnt": (make_casia_gnt, "casia_gnt:{root}", [], ["HWDB1.1trn_gnt/1001-c.gnt", "HWDB1.1trn_gnt/1002-c.gnt"]),
    "casia_dgrl": (make_casia_dgrl, "casia_dgrl:{root}", [], ["HWDB2.0Train/001-P16.dgrl", "HWDB2.0Test/002-P17.dgrl"]),
}
BINARY = {"casia_gnt", "casia_dgrl"}
PER_FORMAT = max(1, N // len(FORMATS))
NUMBER = re.compile(rb"-?\d+(\.\d+)?")


# --------------------------------------------------------------------------------------------- mutations

def _lines(b: bytes) -> list[bytes]:
    return b.splitlines(keepends=True) or [b""]


def _replace_number(rng: random.Random, b: bytes, by: list[bytes]) -> bytes:
    found = list(NUMBER.finditer(b))
    if not found:
        return b
    m = rng.choice(found)
    return b[:m.start()] + rng.choice(by) + b[m.end():]


def _drop_field(rng: random.Random, b: bytes) -> bytes:
    lines = _lines(b)
    i = rng.randrange(len(lines))
    fields = re.split(rb"([ \t,]+|\"\s)", lines[i])
    if len(fields) > 1:
        k = rng.randrange(0, len(fields), 2)  # a field, not a separator
        del fields[k:k + 2]
    lines[i] = b"".join(fields)
    return b"".join(lines)


def _drop_xml_attribute(rng: random.Random, b: bytes) -> bytes:
    found = list(re.finditer(rb'\s\w+="[^"]*"', b))
    if not found:
        return b
    m = rng.choice(found)
    return b[:m.start()] + b[m.end():]


def _reencode(rng: random.Random, b: bytes) -> bytes:
    text = b.decode("utf-8", "replace")
    return text.encode(rng.choice(["utf-16", "utf-16-le", "latin-1", "cp1252", "utf-32"]), "replace")


def _flip(rng: random.Random, b: bytes) -> bytes:
    if not b:
        return b
    a = bytearray(b)
    for _ in range(rng.randint(1, 8)):
        a[rng.randrange(len(a))] = rng.randrange(256)
    return bytes(a)


MUTATIONS = {
    "truncate": lambda r, b: b[:r.randrange(len(b) + 1)],
    "flip bytes": _flip,
    "delete line": lambda r, b: (lambda ls, i: b"".join(ls[:i] + ls[i + 1:]))(_lines(b), r.randrange(len(_lines(b)))),
    "duplicate line": lambda r, b: (lambda ls, i: b"".join(ls[:i + 1] + ls[i:]))(_lines(b), r.randrange(len(_lines(b)))),
    "swap lines": lambda r, b: b"".join(r.sample(_lines(b), len(_lines(b)))),
    "other encoding": _reencode,
    "bom": lambda r, b: b"\xef\xbb\xbf" + b,
    "crlf": lambda r, b: b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
    "cr only": lambda r, b: b.replace(b"\r\n", b"\n").replace(b"\n", b"\r"),
    "huge number": lambda r, b: _replace_number(r, b, [b"99999999999999999999999", b"1e308", b"1e400", b"inf",
                                                       b"nan", b"-0", b"0x10", b"\xd9\xa3"]),
    "negative number": lambda r, b: _replace_number(r, b, [b"-1", b"-99999", b"-1e9", b"-0.5"]),
    "missing field": _drop_field,
    "missing attribute": _drop_xml_attribute,
    "empty file": lambda r, b: b"",
    "whitespace only": lambda r, b: b" \n\t\r\n",
    "nul bytes": lambda r, b: (lambda i: b[:i] + b"\x00" * r.randint(1, 4) + b[i:])(r.randrange(len(b) + 1)),
    "garbage line": lambda r, b: b + bytes(r.randrange(256) for _ in range(r.randint(1, 40))) + b"\n",
    "long line": lambda r, b: b + b"x" * 100_000 + b"\n",
}


def _binary_field(rng: random.Random, b: bytes) -> bytes:
    """A little-endian size, count or code overwritten: 0, 1, all ones, or random."""
    if not b:
        return b
    n = rng.choice([2, 4])
    i = rng.randrange(len(b))
    value = rng.choice([0, 1, (1 << 8 * n) - 1, rng.randrange(1 << 8 * n)])
    return b[:i] + value.to_bytes(n, "little") + b[i + n:]


BINARY_MUTATIONS = {**MUTATIONS, "binary field": _binary_field}


def mangle(rng: random.Random, b: bytes, binary: bool = False) -> tuple[bytes, list[str]]:
    table = BINARY_MUTATIONS if binary else MUTATIONS
    names = rng.sample(sorted(table), rng.randint(1, 3))
    for name in names:
        b = table[name](rng, b)
    return b, names


def _lmdb_case(rng: random.Random, root: Path) -> list[str]:
    """LMDB contents mangled through lmdb itself (a byte-flipped data.mdb can crash liblmdb, which trusts its
    page structure; a truncated one is refused and is tested here too)."""
    entries = [(png_bytes(10, 8, 1), b"one"), (png_bytes(12, 8, 2), b"Two!"), (None, b"labelonly"),
               (png_bytes(14, 8, 3), "né".encode()), (png_bytes(8, 8, 5), None)]
    what, num = [], None
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["label", "image", "num", "drop", "truncate file", "garbage file"])
        i = rng.randrange(len(entries))
        img, lab = entries[i]
        if kind == "label":
            lab, names = mangle(rng, lab or b"x")
            what.append(f"label {i + 1}: {names}")
        elif kind == "image":
            img, names = mangle(rng, img or b"")
            what.append(f"image {i + 1}: {names}")
        elif kind == "num":
            num = rng.choice(["", "abc", "-1", "0", "99999999999999999999", "1e3", " 3 ", "\uff13", "7"])
            what.append(f"num-samples {num!r}")
        else:
            what.append(kind)
        entries[i] = (img, lab) if kind in ("label", "image") else entries[i]
        if kind == "drop":
            entries[i] = (None, None) if rng.random() < 0.5 else (img, None)
    write_lmdb(root / "A", entries, num=num)
    mdb = root / "A" / "data.mdb"
    if "truncate file" in what:
        mdb.write_bytes(mdb.read_bytes()[:rng.randrange(mdb.stat().st_size)])
    if "garbage file" in what:
        mdb.write_bytes(b"not an lmdb\n" * rng.randint(0, 2000))
    return what


# --------------------------------------------------------------------------------------------- loading

def load_all(spec_text: str, opts: list[str]) -> None:
    """What `cvlab data check` does (build_dataset + check_dataset, every image decoded) and what training and
    evaluation do (named_datasets, the report lines printed, every batch of the eval loader)."""
    spec = parse_data_spec(spec_text, opts)
    check_dataset(build_dataset(spec, CHARS, DATA), CHARS)
    for ds in named_datasets([spec], CHARS, DATA).values():
        report_lines(ds)
        for _ in eval_loader(ds, 4, workers=0):
            pass


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    base = tmp_path_factory.mktemp("fixtures")
    made = {}
    for name, (maker, *_rest) in FORMATS.items():
        if maker is not None:
            made[name] = maker(base / name)
    return made


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_mangled_annotations_load_or_fail_as_user_errors(fmt, templates, tmp_path, cli):
    maker, spec, opts, files = FORMATS[fmt]
    failures, outcomes = [], {"loaded": 0, "user error": 0}
    for case in range(PER_FORMAT):
        rng = random.Random(f"{fmt}-{case}")
        root = tmp_path / f"c{case}"
        if maker is None:
            what = _lmdb_case(rng, root)
        else:
            shutil.copytree(templates[fmt], root)
            target = root / rng.choice(files)
            data, names = mangle(rng, target.read_bytes(), binary=fmt in BINARY)
            target.write_bytes(data)
            what = [f"{target.name}: {names}"]
        text, case_opts = spec.format(root=root), [o.format(root=root) for o in opts]
        try:
            load_all(text, case_opts)
            outcomes["loaded"] += 1
        except CvlabError as e:
            outcomes["user error"] += 1
            assert str(e).strip() and "\n" not in str(e).strip(), (fmt, case, what, str(e))
        except Exception:  # noqa: BLE001  (the point of the test: report every case, then fail)
            failures.append(f"{fmt} #{case} {what}: {traceback.format_exc(limit=-2)}")
        if case % 25 == 0:  # and through the CLI: exit 0 or 2, never a traceback
            kind, _, rest = text.partition(":")
            root_arg, _, split = rest.partition(":")
            args = ["data", "check", "--type", kind, "--root", root_arg, *(["--split", split] if split else [])]
            code, _, err = cli(*args, *[a for o in case_opts for a in ("--opt", o)])
            assert code in (0, 2) and "Traceback" not in err, (fmt, case, what, err)
        if maker is None:
            close_env(root / "A")  # py-lmdb keeps one environment per path and process
        shutil.rmtree(root)
    assert not failures, f"{len(failures)} of {PER_FORMAT} cases crashed:\n" + "\n".join(failures[:5])
    assert outcomes["loaded"] and outcomes["user error"], outcomes  # the mutations reach both outcomes


def test_a_mat_file_that_crashes_scipys_reader_is_a_user_error(tmp_path):
    """Found by the fuzz (iiit5k #520): 4 NUL bytes inside a struct element make scipy.io.loadmat segfault; the
    reader runs in a child process, so the crash is one line naming the file, and the run lives on."""
    root = make_iiit5k(tmp_path)
    mat = root / "testdata.mat"
    data = mat.read_bytes()
    mat.write_bytes(data[:720] + b"\x00" * 4 + data[720:])
    with pytest.raises(CvlabError, match=r"testdata\.mat: not a readable MATLAB file"):
        load_all(f"iiit5k:{root}:test", [])
    mat.write_bytes(data)
    load_all(f"iiit5k:{root}:test", [])  # the intact file still loads, through the same child process
