"""`cvlab predict`: read images with a trained run; rows (a table, tsv or json), or a CSV/JSON file."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import CvlabError
from .common import (
    SET_HELP,
    Rows,
    app,
    backend_options,
    channels_last_option,
    err,
    expand_home,
    fold_bn_option,
    format_option,
    guarded,
    is_stdout,
    notes_console,
    output_format,
    plural,
    print_rows,
    write_stdout,
)


@app.command(epilog="Examples:\n\n    cvlab predict runs/quickstart word.png\n\n"
             "    cvlab predict runs/quickstart/20261122-101500 crops/ --out predictions.csv\n\n"
             "    cvlab predict model.pt 'scans/**/*.jpg' --batch-size 128 --out read.json\n\n"
             "    cvlab predict runs/scene_text ~/data/evaluation/IIIT5k_3000 --checkpoint last\n\n"
             "    cvlab predict runs/quickstart crops/ | grep word_12.png        (one tab-separated line per image)\n\n"
             "    cvlab predict runs/quickstart crops/ --backend onnxruntime --check\n\n"
             "An image that cannot be read gets a row saying why and a line on stderr; when no image could be "
             "read the command fails (exit 2).")
@guarded
def predict(
    run: Path = typer.Argument(..., help="A run directory, a folder of runs (newest is used) or a .pt file."),
    images: list[str] = typer.Argument(..., help="Image files, folders, glob patterns (quote them) or LMDBs."),
    checkpoint: str = typer.Option("best", help="best, last, or a checkpoint path."),
    out_file: Path = typer.Option(None, "--out", help="Write the predictions to a .csv or .json file "
                                  "(`-`: CSV on stdout, JSON with `--format json`)."),
    batch_size: int = typer.Option(64, min=1, help="Images per forward pass."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    fold_bn: bool = fold_bn_option(),
    channels_last: bool = channels_last_option(),
    backend: str = backend_options()[0],
    int8: bool = backend_options()[1],
    check: bool = backend_options()[2],
    fmt: str = format_option(),
):
    """Read text from images with a trained run, using the run's own preprocessing (data.image)."""
    from ..engine.predict import output_kind, rows_text, write_rows
    from ..engine.predict import predict as predict_fn
    from ..engine.runs.directory import check_writable_file
    from .progress import make_progress

    to_stdout = is_stdout(out_file)
    if out_file is not None and not to_stdout:  # before any image is read
        output_kind(out_file)
        check_writable_file(out_file, "--out")
    fmt = output_format(fmt)
    rows = predict_fn(run, images, checkpoint=expand_home(checkpoint), batch_size=batch_size,
                      overrides=tuple(set_), fold_bn=fold_bn, channels_last=channels_last, backend=backend,
                      int8=int8, check=check, progress=make_progress(err, 1))
    bad = [r for r in rows if "error" in r]
    if len(bad) == len(rows):  # nothing read: the inputs are bad, and no empty output says otherwise
        shown = "; ".join(f"{r['id']} ({r['error']})" for r in bad[:3])
        more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CvlabError(f"none of the {plural(len(rows), 'image')} could be read: {shown}{more}")
    notes = notes_console("json" if to_stdout else fmt)
    if to_stdout:
        write_stdout(rows_text(rows, "json" if fmt == "json" else "csv"))
    elif out_file is not None:
        write_rows(rows, out_file)
        notes.print(f"written: {out_file} ({plural(len(rows), 'image')})", markup=False, highlight=False)
    else:
        print_rows(_rows(rows), fmt)
    if check:
        read = [r for r in rows if "torch_text" in r]
        differ = [r for r in read if r["text"] != r["torch_text"]]
        shown = "; ".join(f"{r['id']}: {r['text']!r} vs {r['torch_text']!r}" for r in differ[:3])
        err.print(f"{backend}{' int8' if int8 else ''}: {len(differ)} of {plural(len(read), 'prediction')} differ "
                  f"from torch" + (f" (e.g. {shown})" if shown else ""), markup=False, highlight=False)
    elif int8:
        err.print("onnxruntime int8: not exact; its predictions can differ from the float32 model's (--check counts "
                  "them)", markup=False, highlight=False)
    if bad:
        err.print(f"{plural(len(bad), 'image')} could not be read (e.g. {bad[0]['id']}: {bad[0]['error']})",
                  markup=False, highlight=False)


def _rows(rows: list[dict]) -> Rows:
    labelled = any("label" in r for r in rows)
    cells = []
    for r in rows:
        conf = "" if r["confidence"] is None else f"{100 * r['confidence']:.1f}"
        cells.append([r["id"], r["text"] if "error" not in r else f"(unreadable: {r['error']})", conf,
                      *([r.get("label", "")] if labelled else [])])
    return Rows(["image", "text", "confidence %", *(["label"] if labelled else [])], cells, records=rows,
                title=plural(len(rows), "image"), right=frozenset({"confidence %"}),
                fold=frozenset({"image", "text", "label"}))  # a long path wraps instead of losing its file name
