"""`cvlab lm build`: a character n-gram language model for beam search."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import CvlabError
from .common import app, err, guarded, is_stdout, out, plural, write_stdout

lm_app = typer.Typer(no_args_is_help=True, help="Character language models for beam search (eval.lm).")
app.add_typer(lm_app, name="lm")


@lm_app.command("build", epilog="Examples:\n\n    cvlab lm build train_labels.txt --order 4 --charset lower36 --out chars.arpa\n\n"
                "    cvlab lm build experiments/scene_text.yaml --order 5 --out scene.arpa\n\n"
                "    cvlab lm build train_labels.txt --order 3 --out - | head\n\n"
                "    cvlab eval runs/quickstart --set eval.decoder=beam --set eval.lm=chars.arpa")
@guarded
def build(
    labels: list[Path] = typer.Argument(..., help="Label files (one label a line, or `image<TAB>label`), or an "
                                        "experiment YAML (the labels of its data.train sets)."),
    order: int = typer.Option(4, metavar="N", help="n-gram order, 2 or more (flashlight's KenLM decoder rejects "
                              "unigram models)."),
    out_path: Path = typer.Option(Path("chars.arpa"), "--out", metavar="FILE.arpa",
                                  help="Where to write it (`-`: stdout)."),
    charset: str = typer.Option(None, metavar="PRESET", help="Fold and filter label files as a model of this "
                                "charset learns them (lower36: lower-cased, only 0-9a-z); the model's charset, so "
                                "the LM's counts are not split by case. Default: the labels as written."),
):
    """Write an ARPA character n-gram model of the labels (interpolated Witten-Bell smoothing), for
    `eval.decoder: beam` with `eval.lm: FILE.arpa`. Never build it from the labels you evaluate on."""
    from ..engine.eval.lm import build_lm
    from .progress import make_progress

    if order < 2:  # before reading any label (minutes for an experiment's data), one line naming the option
        raise CvlabError(f"--order {order}: give 2 or more (flashlight's KenLM decoder rejects a unigram model)")
    progress = make_progress(err, 1)  # what it is reading (minutes for a large training set), on stderr
    if is_stdout(out_path):  # built beside, then copied to stdout: the summary goes to stderr
        import tempfile

        with tempfile.TemporaryDirectory(prefix="cvlab-lm-") as tmp:
            info = build_lm(labels, order, Path(tmp) / "lm.arpa", charset, progress=progress)
            write_stdout(Path(info["path"]).read_text(encoding="utf-8"))
        info["path"] = "stdout"
    else:
        info = build_lm(labels, order, out_path, charset, progress=progress)
    grams = ", ".join(plural(n, f"{k}-gram") for k, n in info["ngrams"].items())
    folded = f"; folded to {charset}" if charset else ""
    if charset or info["dropped_chars"]:
        folded += f", {plural(info['dropped_chars'], 'character')} outside the charset dropped"
    if info.get("empty_labels"):
        folded += f", {plural(info['empty_labels'], 'label')} with no character in it left out"
    (err if is_stdout(out_path) else out).print(
        f"written: {info['path']} (order {info['order']}, {plural(info['labels'], 'label')}, "
        f"{plural(info['vocab'], 'symbol')}; {grams}{folded})", markup=False, highlight=False)
