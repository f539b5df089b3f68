"""`cvlab models list` and `cvlab models show`."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import SET_HELP, Rows, app, format_option, guarded, out, output_format, print_rows

models_app = typer.Typer(no_args_is_help=True, help="List the model parts; show a configured model layer by layer.")
app.add_typer(models_app, name="models")


def _doc(obj) -> str:
    return ((obj.__doc__ or "").strip().splitlines() or [""])[0]


@models_app.command("list", epilog="Examples:\n\n    cvlab models list\n\n    cvlab models list --format tsv | grep norm")
@guarded
def list_(fmt: str = format_option()):
    """Print every registered backbone, norm, activation, sequence stage, head and transform (a table per part on
    a terminal; with tsv and json one row per name: part, name, depth, what)."""
    from ..config.model import BACKBONE_DEPTHS
    from ..models import ACTS, BACKBONES, HEADS, NORMS, SEQUENCES, TRANSFORMS

    fmt = output_format(fmt)
    parts = [  # (part, the config key naming it, [(name, depth, what)])
        ("backbone", "model.backbone.name",
         [(n, ", ".join(map(str, BACKBONE_DEPTHS[n])) or "-", _doc(c)) for n, c in BACKBONES.items()]),
        ("norm", "model.norm.name", [(n, "", f.doc) for n, f in NORMS.items()]),
        ("activation", "model.act", [(n, "", repr(f())) for n, f in ACTS.items()]),
        ("sequence", "model.sequence.name", [(n, "", _doc(c)) for n, c in SEQUENCES.items()]),
        ("head", "model.head.name", [(n, "", _doc(c)) for n, c in HEADS.items()]),
        ("transform", "model.transform", [(n, "", _doc(c) if c else "identity") for n, c in TRANSFORMS.items()]),
    ]
    if fmt == "table":
        for part, key, rows in parts:
            depth = part == "backbone"
            what = "module" if part == "activation" else "what"
            print_rows(Rows(["name", *(["depth"] if depth else []), what],
                            [[n, *([d] if depth else []), w] for n, d, w in rows],
                            title=f"{'activations' if part == 'activation' else part + 's'} ({key})",
                            extra={"title_justify": "left"}), fmt)
        return
    cells = [[part, n, d, w] for part, _, rows in parts for n, d, w in rows]
    print_rows(Rows(["part", "name", "depth", "what"], cells,
                    [{"part": part, "key": key, "name": n, "depth": d, "what": w}
                     for part, key, rows in parts for n, d, w in rows]), fmt)


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
    columns = ["layer", "type", "output", "params", "norm"]
    print_rows(Rows(columns, [[name, kind, shape, f"{params:,}", norm] for name, kind, shape, params, norm in s.rows],
                    title=f"{experiment}: {m.transform} / {m.backbone.name} / {m.norm.name} / {m.act} / "
                          f"{m.sequence.name} / {m.head.name}",
                    right=frozenset({"output", "params"}),
                    fold=frozenset(columns),  # layer names must survive narrow terminals
                    extra={"title_justify": "left"}),
               output_format(), notes=out)  # the totals below are stdout's too
    out.print(f"parameters: {s.params:,} (trainable {s.trainable:,})")
    out.print(f"multiply-adds: {s.macs / 1e9:.3f} G per {img.channels}×{img.height}×{img.width} image")
    out.print(f"sequence steps: {check['steps']}; classes: {tokenizer.num_classes} ({m.head.name})")
    for line in adjustment_messages(cfg, check["adjustments"], check["degenerate"]):
        out.print(f"adjusted: {line}", markup=False, highlight=False)
    out.print("preflight: ok")
