"""`cvlab lm build`: a character n-gram language model for beam search."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import app, guarded, out

lm_app = typer.Typer(no_args_is_help=True, help="Character language models for beam search (eval.lm).")
app.add_typer(lm_app, name="lm")


@lm_app.command("build", epilog="Examples:\n\n    cvlab lm build train_labels.txt --order 4 --charset lower36 --out chars.arpa\n\n"
                "    cvlab lm build experiments/scene_text.yaml --order 5 --out scene.arpa\n\n"
                "    cvlab eval runs/quickstart --set eval.decoder=beam --set eval.lm=chars.arpa")
@guarded
def build(
    labels: list[Path] = typer.Argument(..., help="Label files (one label a line, or `image<TAB>label`), or an "
                                        "experiment YAML (the labels of its data.train sets)."),
    order: int = typer.Option(4, min=1, help="n-gram order (2 or more)."),
    out_path: Path = typer.Option(Path("chars.arpa"), "--out", metavar="FILE.arpa", help="Where to write it."),
    charset: str = typer.Option(None, metavar="PRESET", help="Fold and filter label files as a model of this "
                                "charset learns them (lower36: lower-cased, only 0-9a-z); the model's charset, so "
                                "the LM's counts are not split by case. Default: the labels as written."),
):
    """Write an ARPA character n-gram model of the labels (interpolated Witten-Bell smoothing), for
    `eval.decoder: beam` with `eval.lm: FILE.arpa`. Never build it from the labels you evaluate on."""
    from ..engine.eval.lm import build_lm

    info = build_lm(labels, order, out_path, charset)
    grams = ", ".join(f"{n} {k}-grams" for k, n in info["ngrams"].items())
    folded = f"; folded to {charset}" if charset else ""
    if charset or info["dropped_chars"]:
        folded += f", {info['dropped_chars']} characters outside the charset dropped"
    out.print(f"written: {info['path']} (order {info['order']}, {info['labels']} labels, {info['vocab']} symbols; "
              f"{grams}{folded})", markup=False, highlight=False)
