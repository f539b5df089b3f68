"""What `cvlab eval` leaves in a run: nothing overwritten, every evaluation findable by what it scored.

    eval/index.jsonl                                   one line per evaluation: key, folder, what was scored
                                                       (each --data spec, resolved root, decoder), headline numbers
    eval/<checkpoint>-step<N>_<protocol>_<datasets>_<decoder>_<digest>/<time>/
        eval.json                                      metrics, filtered counts, error summary per dataset, and
                                                       the data specs and decoder that were scored
        <dataset>.predictions.csv                      one row per sample: id, label, prediction, confidence,
                                                       correct under the protocol, the strings it compared
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import re
import shlex
import time
from pathlib import Path

from ...atomic import write_json
from ...errors import CvlabError

COLUMNS = ("index", "id", "label", "prediction", "confidence", "correct", "status", "label_scored",
           "prediction_scored", "one_minus_ned")


def _slug(text: str) -> str:
    return re.sub(r"[^\w.\-+]", "_", text)


def spec_text(spec) -> str:
    """A dataset spec as `cvlab eval --data` takes it: `TYPE[:ROOT[:SPLIT]]` and one `--opt key=value` per other
    field that was given (defaults left out), quoted for a shell."""
    given = spec.model_dump(mode="json", exclude_defaults=True)
    given.pop("type", None)
    root, split = given.pop("root", None), given.pop("split", None)
    split = split if split is not None else getattr(spec, "split", None)
    text = spec.type
    if root is not None:
        text += f":{root}" + (f":{split}" if split is not None else "")
    elif split is not None:
        given["split"] = split
    opts = [f"--opt {shlex.quote(f'{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}')}"
            for k, v in given.items()]
    return " ".join([shlex.quote(text), *opts])


def data_identity(spec) -> dict:
    """What a dataset spec scores: its type, root resolved to an absolute path, the split and every other field
    given (the display `name` aside), with its `--data` form as `spec`. Two evaluations share a key only when
    these (and the decoder, protocol and checkpoint) are the same."""
    ident = spec.model_dump(mode="json", exclude_defaults=True)
    ident.pop("name", None)
    ident["type"] = spec.type
    if getattr(spec, "split", None) is not None:
        ident["split"] = spec.split
    if getattr(spec, "root", None) is not None:
        ident["root"] = str(Path(spec.root).expanduser().resolve())
    return {"spec": spec_text(spec), **dict(sorted(ident.items()))}


def decoder_identity(ev) -> dict:
    """The decoding an evaluation used (`cfg.eval`): greedy, or beam with its size, LM (resolved) and weight."""
    if ev.decoder == "greedy":
        return {"name": "greedy"}
    lm = str(Path(ev.lm).expanduser().resolve()) if ev.lm else None
    return {"name": ev.decoder, "beam_size": ev.beam_size, "lm": lm, **({"lm_weight": ev.lm_weight} if lm else {})}


def digest(identity) -> str:
    """A short stable hash of an evaluation's identity (data, decoder, lexicon): the key's last part."""
    return hashlib.sha1(json.dumps(identity, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:8]


def _decoder_tag(decoder: dict) -> str:
    if decoder.get("name", "greedy") == "greedy":
        return "greedy"
    return f"{decoder['name']}{decoder.get('beam_size', '')}" + ("+lm" if decoder.get("lm") else "")


def eval_key(checkpoint: Path, step: int, protocol: str, datasets: list[str], *, decoder: dict | None = None,
             identity=None) -> str:
    """`<checkpoint>-step<N>_<protocol>_<datasets>_<decoder>_<digest>`: readable parts, then a digest of what
    was scored (`identity`: each dataset's type, resolved root, split and options; the decoder; the lexicon;
    `backend` when it is not torch: `..._greedy+onnxruntime-int8_<digest>`), so two crop folders both named
    `folder`, a greedy and a beam+LM evaluation, or a torch and an int8 one, never share a folder."""
    names = "+".join(datasets)
    if len(names) > 60:  # many LMDB parts: a readable head and a digest of the whole list
        names = names[:48] + "-" + hashlib.sha1(names.encode()).hexdigest()[:8]
    key = f"{checkpoint.stem}-step{step}_{protocol}_{names}"
    if decoder is not None or identity is not None:
        backend = (identity or {}).get("backend") if isinstance(identity, dict) else None
        tag = _decoder_tag(decoder or {}) + (f"+{backend['name']}-{backend['precision']}" if backend else "")
        key += f"_{tag}_{digest(identity)}"
    return _slug(key)


def eval_dir(run: Path, checkpoint: Path, *, step: int, protocol: str, datasets: list[str],
             decoder: dict | None = None, identity=None) -> Path:
    """A new folder for this evaluation: same key, new time; a second one within the same second gets -1."""
    key = eval_key(checkpoint, step, protocol, datasets, decoder=decoder, identity=identity)
    base = Path(run) / "eval" / key / time.strftime("%Y%m%d-%H%M%S")
    path, i = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    path.mkdir(parents=True)
    return path


def write_predictions(folder: Path, dataset: str, rows: list[dict]) -> Path:
    path = folder / f"{_slug(dataset)}.predictions.csv"
    extra = sorted({k for r in rows for k in r if k.startswith("lexicon_")})
    if any("reference" in r for r in rows):  # --check: the torch model's reading beside the backend's
        extra.append("reference")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")  # '\n' as every other file cvlab writes (csv's default is CRLF)
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
            "data": [{k: d[k] for k in ("spec", "type", "root", "split", "datasets") if k in d}
                     for d in result.get("data", [])],
            "decoder": result.get("decoder"), "lexicon": result.get("lexicon"),
            **({"backend": {k: result["backend"][k] for k in ("name", "precision")}} if "backend" in result else {}),
            "datasets": {k: {"samples": v["samples"], "word_acc": v["word_acc"]}
                         for k, v in result["datasets"].items()}}
    with open(folder.parent.parent / "index.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")


def recorded_predictions(run: Path, key: str) -> tuple[str, dict[str, list[str]]] | None:
    """The newest evaluation recorded under `key` (its folder, relative to the run, and each dataset's
    predictions in sample order), or None when there is none or it cannot be read."""
    folders = sorted((Path(run) / "eval" / key).glob("*/eval.json"), key=lambda p: p.stat().st_mtime)
    for path in reversed(folders):
        try:
            ev = json.loads(path.read_text(encoding="utf-8"))
            preds = {}
            for name, r in ev["datasets"].items():
                with open(path.parent / r["predictions"], encoding="utf-8", newline="") as f:
                    preds[name] = [row["prediction"] for row in csv.DictReader(f)]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        return str(path.parent.relative_to(Path(run))), preds
    return None


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


def history(run: Path) -> list[dict]:
    """Every evaluation of a run, oldest first, as eval/index.jsonl lists them. Lines written before the record
    kept what was scored (key `<checkpoint>-step<N>_<protocol>_<datasets>`) read the same, with `data` None and
    `decoder` taken from their eval.json."""
    index = Path(run) / "eval" / "index.jsonl"
    if not index.is_file():
        raise CvlabError(f"{run}: no evaluation recorded (no eval/index.jsonl); run `cvlab eval {run}`")
    out = []
    for n, text in enumerate(index.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            line["dir"]
        except (ValueError, KeyError, TypeError):
            raise CvlabError(f"{index}:{n}: not an evaluation record (a JSON object with `dir`)") from None
        line.setdefault("data", None)
        if "decoder" not in line:  # an older line: its eval.json has always named the decoder
            with contextlib.suppress(OSError, ValueError):
                line["decoder"] = json.loads((index.parent / line["dir"] / "eval.json").read_text(
                    encoding="utf-8")).get("decoder")
            line.setdefault("decoder", None)
        out.append(line)
    if not out:
        raise CvlabError(f"{index}: no evaluation recorded in it; run `cvlab eval {run}`")
    return out


def latest(run: Path) -> tuple[dict, Path]:
    """The newest evaluation of a run (by eval/index.jsonl) and its folder."""
    folder = Path(run) / "eval" / history(run)[-1]["dir"]
    return json.loads((folder / "eval.json").read_text(encoding="utf-8")), folder
