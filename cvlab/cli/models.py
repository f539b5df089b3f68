"""`cvlab models list` and `cvlab models show`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .common import SET_HELP, app, guarded, out

models_app = typer.Typer(no_args_is_help=True, help="List the model parts; show a configured model layer by layer.")
app.add_typer(models_app, name="models")


def _doc(obj) -> str:
    return ((obj.__doc__ or "").strip().splitlines() or [""])[0]


@models_app.command("list", epilog="Example:\n\n    cvlab models list")
@guarded
def list_():
    """Print every registered backbone, norm, activation, sequence stage, head and transform."""
    from ..config.model import BACKBONE_DEPTHS
    from ..models import ACTS, BACKBONES, HEADS, NORMS, SEQUENCES, TRANSFORMS

    def table(title: str, rows: list[tuple[str, ...]], cols: tuple[str, ...]) -> Table:
        t = Table(title=title, title_justify="left")
        for c in cols:
            t.add_column(c)
        for r in rows:
            t.add_row(*r)
        return t

    out.print(table("backbones (model.backbone.name)",
                    [(n, ", ".join(map(str, BACKBONE_DEPTHS[n])) or "-", _doc(c)) for n, c in BACKBONES.items()],
                    ("name", "depth", "what")))
    out.print(table("norms (model.norm.name)", [(n, f.doc) for n, f in NORMS.items()], ("name", "what")))
    out.print(table("activations (model.act)", [(n, repr(f())) for n, f in ACTS.items()], ("name", "module")))
    out.print(table("sequence stages (model.sequence.name)", [(n, _doc(c)) for n, c in SEQUENCES.items()],
                    ("name", "what")))
    out.print(table("heads (model.head.name)", [(n, _doc(c)) for n, c in HEADS.items()], ("name", "what")))
    out.print(table("transforms (model.transform)", [(n, _doc(c) if c else "identity") for n, c in TRANSFORMS.items()],
                    ("name", "what")))


@models_app.command("show", epilog="Examples:\n\n    cvlab models show experiments/crnn_standard.yaml\n\n"
                    "    cvlab models show experiments/quickstart.yaml --set model.backbone.name=resnet "
                    "--set model.norm.name=group\n\n"
                    "    cvlab models show experiments/resnet_attention.yaml --depth 2")
@guarded
def show(
    experiment: Path = typer.Argument(..., help="Experiment YAML file."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    depth: int = typer.Option(3, min=1, help="Module nesting level of the rows (leaves above it are shown too)."),
):
    """Per-layer table (output shape, parameters, norm) and totals (parameters, multiply-adds for the configured
    input size), any adjusted group counts, and the preflight checks `cvlab train` runs."""
    from ..config import load_config
    from ..data.tokenizer import tokenizer_for
    from ..engine.train.preflight import adjustment_messages, preflight
    from ..models import build_model
    from ..models.summary import summarize

    cfg = load_config(experiment, set_)
    img = cfg.data.image
    tokenizer = tokenizer_for(cfg)
    model, adjustments, degenerate = build_model(cfg.model, tokenizer.num_classes, img.channels)
    # the summary's forward below is the eval-mode one
    check = preflight(model, cfg, eval_mode=False, adjustments=adjustments, degenerate=degenerate)
    s = summarize(model, (img.channels, img.height, img.width), depth)
    m = cfg.model
    t = Table(title=f"{experiment}: {m.transform} / {m.backbone.name} / {m.norm.name} / {m.act} / "
                    f"{m.sequence.name} / {m.head.name}", title_justify="left")
    for col, just in (("layer", "left"), ("type", "left"), ("output", "right"), ("params", "right"),
                      ("norm", "left")):
        t.add_column(col, justify=just, overflow="fold")  # layer names must survive narrow terminals
    for name, kind, shape, params, norm in s.rows:
        t.add_row(name, kind, shape, f"{params:,}", norm)
    out.print(t)
    out.print(f"parameters: {s.params:,} (trainable {s.trainable:,})")
    out.print(f"multiply-adds: {s.macs / 1e9:.3f} G per {img.channels}×{img.height}×{img.width} image")
    out.print(f"sequence steps: {check['steps']}; classes: {tokenizer.num_classes} ({m.head.name})")
    for line in adjustment_messages(cfg, check["adjustments"], check["degenerate"]):
        out.print(f"adjusted: {line}", markup=False, highlight=False)
    out.print("preflight: ok")
