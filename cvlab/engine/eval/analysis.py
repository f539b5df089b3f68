"""What went wrong on a dataset: the most frequent confusions and the worst samples, from per-sample rows."""

from __future__ import annotations

from collections import Counter

from rapidfuzz.distance import Levenshtein

EMPTY = "∅"


def char_confusions(pred: str, label: str) -> list[str]:
    """Edits turning the prediction into the label, as `label char→predicted char` (∅: missing/extra)."""
    out = []
    for op, i, j in Levenshtein.editops(pred, label):
        if op == "replace":
            out.append(f"{label[j]}→{pred[i]}")
        elif op == "insert":  # the label has a character the prediction lacks
            out.append(f"{label[j]}→{EMPTY}")
        else:  # the prediction has an extra character
            out.append(f"{EMPTY}→{pred[i]}")
    return out


def error_summary(rows: list[dict], top: int = 10) -> dict:
    """Counts over the scored rows (strings as the protocol compares them)."""
    wrong = [r for r in rows if r.get("status") == "scored" and not r["correct"]]
    chars, words = Counter(), Counter()
    for r in wrong:
        chars.update(char_confusions(r["prediction_scored"], r["label_scored"]))
        words[f"{r['label_scored']}→{r['prediction_scored'] or EMPTY}"] += 1
    # worst: furthest from the label, and among those the most confident (confidently wrong is worse)
    worst = sorted(wrong, key=lambda r: (r["ned"], -(r["confidence"] or 0.0)))[:top]
    return {
        "wrong": len(wrong),
        "char_confusions": chars.most_common(top),
        "word_confusions": [[k, n] for k, n in words.most_common(top) if n > 1],
        "worst": [{"id": r.get("id", ""), "label": r["label"], "prediction": r["prediction"],
                   "confidence": r["confidence"], "one_minus_ned": r["ned"]} for r in worst],
    }


def summary_lines(name: str, summary: dict, top: int = 5) -> list[str]:
    if not summary["wrong"]:
        return [f"{name}: no errors"]
    lines = [f"{name}: {summary['wrong']} wrong; most frequent confusions (label→prediction): " +
             ", ".join(f"{k} ×{n}" for k, n in summary["char_confusions"][:top])]
    if summary["word_confusions"]:
        lines.append(f"{name}: repeated word errors: " +
                     ", ".join(f"{k} ×{n}" for k, n in summary["word_confusions"][:top]))
    for w in summary["worst"][:top]:
        conf = "" if w["confidence"] is None else f", confidence {100 * w['confidence']:.1f}%"
        lines.append(f"{name}:   worst: {w['label']!r} read as {w['prediction']!r} "
                     f"(1−NED {100 * w['one_minus_ned']:.1f}%{conf}) {w['id']}")
    return lines
