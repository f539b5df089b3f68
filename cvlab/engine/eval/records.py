"""What `cvlab eval` leaves in a run: nothing overwritten, every evaluation findable by what it scored.

    eval/index.jsonl                                   one line per evaluation: key, folder, headline numbers
    eval/<checkpoint>-step<N>_<protocol>_<datasets>/<time>/
        eval.json                                      metrics, filtered counts, error summary per dataset
        <dataset>.predictions.csv                      one row per sample: id, label, prediction, confidence,
                                                       correct under the protocol, the strings it compared
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
from pathlib import Path

from ...atomic import write_json
from ...errors import CvlabError

COLUMNS = ("index", "id", "label", "prediction", "confidence", "correct", "status", "label_scored",
           "prediction_scored", "one_minus_ned")


def _slug(text: str) -> str:
    return re.sub(r"[^\w.\-+]", "_", text)


def eval_key(checkpoint: Path, step: int, protocol: str, datasets: list[str]) -> str:
    names = "+".join(datasets)
    if len(names) > 60:  # many LMDB parts: a readable head and a digest of the whole list
        names = names[:48] + "-" + hashlib.sha1(names.encode()).hexdigest()[:8]
    return _slug(f"{checkpoint.stem}-step{step}_{protocol}_{names}")


def eval_dir(run: Path, checkpoint: Path, *, step: int, protocol: str, datasets: list[str]) -> Path:
    """A new folder for this evaluation: same key, new time; a second one within the same second gets -1."""
    base = Path(run) / "eval" / eval_key(checkpoint, step, protocol, datasets) / time.strftime("%Y%m%d-%H%M%S")
    path, i = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    path.mkdir(parents=True)
    return path


def write_predictions(folder: Path, dataset: str, rows: list[dict]) -> Path:
    path = folder / f"{_slug(dataset)}.predictions.csv"
    extra = sorted({k for r in rows for k in r if k.startswith("lexicon_")})
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([*COLUMNS, *extra])
        for r in rows:
            conf = r.get("confidence")
            scored = r.get("status") == "scored"
            w.writerow([r.get("index", ""), r.get("id", ""), r["label"], r["prediction"],
                        "" if conf is None else f"{conf:.6f}", int(r["correct"]) if scored else "", r["status"],
                        r.get("label_scored", ""), r.get("prediction_scored", ""),
                        f"{r['ned']:.6f}" if scored else "", *(r.get(k, "") for k in extra)])
    return path


def record(folder: Path, result: dict) -> None:
    """eval.json in the folder, and one line in eval/index.jsonl (appended: the history is never rewritten)."""
    write_json(result, folder / "eval.json")
    line = {"time": folder.name, "key": folder.parent.name, "dir": str(folder.relative_to(folder.parent.parent)),
            "checkpoint": result["checkpoint"], "step": result["step"], "protocol": result["protocol"],
            "datasets": {k: {"samples": v["samples"], "word_acc": v["word_acc"]}
                         for k, v in result["datasets"].items()}}
    with open(folder.parent.parent / "index.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")


def load_lexicon(spec: str | None) -> str | tuple | None:
    """`eval.lexicon`: "dataset", None, or a word file -> (name, words) for every sample."""
    if spec in (None, "dataset"):
        return spec
    path = Path(spec).expanduser()
    if not path.is_file():
        raise CvlabError(f"eval.lexicon: {path}: file not found (give `dataset`, a word file or null)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise CvlabError(f"{path}:{line}: not valid UTF-8 text (eval.lexicon)") from None
    words = tuple(dict.fromkeys(w.strip() for w in text.splitlines() if w.strip()))
    if not words:
        raise CvlabError(f"eval.lexicon: {path}: no words in it (one word a line)")
    return path.stem, words


def latest(run: Path) -> tuple[dict, Path]:
    """The newest evaluation of a run (by eval/index.jsonl) and its folder."""
    index = Path(run) / "eval" / "index.jsonl"
    if not index.is_file():
        raise CvlabError(f"{run}: no evaluation recorded (no eval/index.jsonl); run `cvlab eval {run}`")
    folder = index.parent / json.loads(index.read_text(encoding="utf-8").splitlines()[-1])["dir"]
    return json.loads((folder / "eval.json").read_text(encoding="utf-8")), folder
