"""`iiit5k`: IIIT5K-Word_V3.0 as unpacked: `traindata.mat`/`testdata.mat` (MATLAB v5, read with scipy) beside
`train/` and `test/`. Each .mat holds a 1×N struct array with `ImgName` (`test/1002_1.png`), `GroundTruth`,
`smallLexi` (50 words) and `mediumLexi` (1000 words); the lexicons are kept for lexicon-constrained accuracy
(IIIT5K-50 and IIIT5K-1k).

`labels` may also name the character-box files, `trainCharBound.mat`/`testCharBound.mat`: a struct array
(`trainCharBound`/`testCharBound`) with `ImgName`, `chars` (the word, case as written on the image) and `charBB`
(one x,y,w,h box per character). Its labels are read from `chars`; it has no lexicons."""

from __future__ import annotations

import faulthandler
import os
import pickle
from pathlib import Path

import numpy as np

from ...errors import CvlabError
from .base import ListDataset, need_dir, need_file, under

LAYOUT = "ROOT/testdata.mat (traindata.mat) and ROOT/test/*.png (train/*.png), as in IIIT5K-Word_V3.0"


def _strings(x) -> list[str]:
    """Every string inside a (nested) MATLAB char/cell array, in order."""
    if isinstance(x, str):
        return [x]
    if isinstance(x, bytes):
        return [x.decode("utf-8", "replace")]
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "U":
            return [str(s) for s in x.ravel()]
        return [s for e in x.ravel() for s in _strings(e)]
    return [str(x)]


def _one(x) -> str:
    s = _strings(x)
    return s[0] if s else ""


def _loadmat(mat: Path) -> dict:
    """scipy.io.loadmat in a forked child: scipy's compiled reader can crash (SIGSEGV) on a damaged file, which
    no exception handler catches; the child's crash becomes a CvlabError naming the file. (No fork: in-process.)"""
    import scipy.io  # here, not at the top: every command that lists the dataset types would pay for it

    if not hasattr(os, "fork"):
        return _read(mat)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: read, send the result or the error, and leave without any cleanup of the parent's
        os.close(r)
        faulthandler.disable()  # a crash here is reported by the parent, not dumped by the child
        try:
            try:
                payload = ("ok", scipy.io.loadmat(str(mat)))
            except BaseException as e:  # noqa: BLE001  (everything goes back to the parent as a message)
                payload = ("error", f"{e.__class__.__name__}: {e}")
            with os.fdopen(w, "wb") as f:
                pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        raw = f.read()
    _, status = os.waitpid(pid, 0)
    if not raw:
        why = f"the reader crashed on it (signal {os.WTERMSIG(status)})" if os.WIFSIGNALED(status) else \
            "the reader stopped without a result"
        raise CvlabError(f"{mat}: not a readable MATLAB file ({why}); copy it again from the IIIT5K archive")
    kind, value = pickle.loads(raw)
    if kind == "error":
        raise CvlabError(f"{mat}: not a readable MATLAB file ({value})")
    return value


def _read(mat: Path) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(str(mat))
    except Exception as e:  # scipy raises assorted errors for non-.mat input
        raise CvlabError(f"{mat}: not a readable MATLAB file ({e.__class__.__name__}: {e})") from None


class Iiit5kDataset(ListDataset):
    def index(self) -> None:
        spec = self.spec
        root = need_dir(spec.root_path, LAYOUT)
        var = f"{spec.split}data"
        mat = need_file(under(root, spec.labels, f"{var}.mat"), LAYOUT)
        base = under(root, spec.images, ".")
        data = _loadmat(mat)
        key = next((k for k in (var, f"{spec.split}CharBound") if k in data), None) or \
            next((k for k in data if not k.startswith("__")), None)
        arr = data.get(key) if key else None
        fields = getattr(getattr(arr, "dtype", None), "names", None) or ()
        label_field = next((f for f in ("GroundTruth", "chars") if f in fields), None)
        if "ImgName" not in fields or label_field is None:
            what = f"struct array `{key}` has fields {', '.join(fields)}" if fields else \
                f"no struct array among its variables ({', '.join(k for k in data if not k.startswith('__')) or 'none'})"
            raise CvlabError(f"{mat}: {what}; cvlab reads ImgName with GroundTruth ({var}.mat) or with chars "
                             f"({spec.split}CharBound.mat)")
        if label_field == "chars":
            self.report.note(f"labels from `chars` of {mat.name} (case as written; {var}.mat's GroundTruth is "
                             f"upper-case); no lexicons")
        for n, rec in enumerate(arr.ravel(), 1):
            name, label = _one(rec["ImgName"]), _one(rec[label_field])
            where = f"{mat.name} #{n}"
            if not name:
                self.malformed(mat, n, "record without ImgName")
                continue
            if not label:
                self.report.drop("empty label", where)
                continue
            lex = {}
            if "smallLexi" in fields:
                lex["50"] = _strings(rec["smallLexi"])
            if "mediumLexi" in fields:
                lex["1k"] = _strings(rec["mediumLexi"])
            if self.keep_if_exists(base / name, label, where):
                self.add(base / name, label, lexicons=lex or None)
