"""`cvlab predict`: read images with a trained run; a table, or a CSV/JSON file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from .common import SET_HELP, app, err, guarded, out


@app.command(epilog="Examples:\n\n    cvlab predict runs/quickstart word.png\n\n"
             "    cvlab predict runs/quickstart/20261122-101500 crops/ --out predictions.csv\n\n"
             "    cvlab predict model.pt 'scans/**/*.jpg' --batch-size 128 --out read.json\n\n"
             "    cvlab predict runs/scene_text ~/data/evaluation/IIIT5k_3000 --checkpoint last")
@guarded
def predict(
    run: Path = typer.Argument(..., help="A run directory, a folder of runs (newest is used) or a .pt file."),
    images: list[str] = typer.Argument(..., help="Image files, folders, glob patterns (quote them) or LMDBs."),
    checkpoint: str = typer.Option("best", help="best, last, or a checkpoint path."),
    out_file: Path = typer.Option(None, "--out", help="Write the predictions to a .csv or .json file."),
    batch_size: int = typer.Option(64, min=1, help="Images per forward pass."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
):
    """Read text from images with a trained run, using the run's own preprocessing (data.image)."""
    from ..engine.predict import predict as predict_fn
    from ..engine.predict import write_rows
    from ..engine.runs.directory import check_writable_file

    if out_file is not None:
        check_writable_file(out_file, "--out")
    rows = predict_fn(run, images, checkpoint=checkpoint, batch_size=batch_size, overrides=tuple(set_))
    bad = [r for r in rows if "error" in r]
    if out_file is not None:
        write_rows(rows, out_file)
        out.print(f"written: {out_file} ({len(rows)} images)", markup=False, highlight=False)
    else:
        labelled = any("label" in r for r in rows)
        table = Table(title=f"{len(rows)} images")
        for col in ("image", "text", "confidence %", *(("label",) if labelled else ())):
            table.add_column(col, justify="right" if col == "confidence %" else "left",
                             overflow="fold")  # a long path wraps instead of losing its file name
        for r in rows:
            conf = "" if r["confidence"] is None else f"{100 * r['confidence']:.1f}"
            table.add_row(r["id"], r["text"] if "error" not in r else f"(unreadable: {r['error']})", conf,
                          *((r.get("label", ""),) if labelled else ()))
        out.print(table)
    if bad:
        err.print(f"{len(bad)} images could not be read (e.g. {bad[0]['id']}: {bad[0]['error']})", markup=False,
                  highlight=False)
