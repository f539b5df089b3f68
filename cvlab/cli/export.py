"""`cvlab export`: a run as an ONNX or TorchScript model, checked against the native one."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import Rows, app, err, expand_home, guarded, out, output_format, print_rows, refuse_stdout


@app.command(epilog="Examples:\n\n    cvlab export runs/quickstart --format onnx --verify\n\n"
             "    cvlab export runs/quickstart --format torchscript --out crnn.torchscript.pt\n\n"
             "    cvlab export runs/scene_text --checkpoint last --format onnx --tolerance 1e-3")
@guarded
def export(
    run: Path = typer.Argument(..., help="A run directory, a folder of runs (newest is used) or a .pt file."),
    fmt: str = typer.Option("onnx", "--format", help="onnx (needs the export extra: pip install 'cvlab[export]') "
                            "or torchscript."),
    out_path: Path = typer.Option(None, "--out", metavar="PATH",
                                  help="Output file (default: RUN/export/<checkpoint>.onnx or .torchscript.pt)."),
    verify: bool = typer.Option(False, "--verify", help="Also score the run's val sets with the exported model "
                                "(onnxruntime for onnx) beside the native one, under the run's protocol."),
    checkpoint: str = typer.Option("best", help="best, last, or a checkpoint path."),
    tolerance: float = typer.Option(1e-4, min=0, help="Largest logit difference accepted, exported vs native."),
):
    """Export a trained run: images (B, C, H, W) in [0, 1], batch and width dynamic -> logits (B, T, classes).

    Every export is run at two widths against the native model; a difference beyond `--tolerance`, or with
    `--verify` any changed prediction, fails with exit code 1. A JSON file beside the model gives its charset,
    specials, decoding rule and image geometry."""
    from ..engine.export import ExportMismatch, export_run
    from .progress import make_progress

    refuse_stdout(out_path, "--out", "a model (and the JSON beside it)")
    try:
        res = export_run(run, fmt, out=out_path, do_verify=verify, checkpoint=expand_home(checkpoint),
                         tolerance=tolerance, progress=make_progress(err, 1))
    except ExportMismatch as e:
        err.print(f"error: export check failed: {e}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    widths = ", ".join(f"width {w}: {d:.2g}" for w, d in res["widths"].items())
    out.print(f"written: {res['path']} and {res['meta']}", markup=False, highlight=False)
    out.print(f"checked against the native model ({widths}; largest logit difference, tolerance "
              f"{res['tolerance']:g})", markup=False, highlight=False)
    if "verify" in res:
        columns = ["dataset", "samples", "native word acc %", "exported word acc %", "max logit diff",
                   "changed predictions"]
        cells = [[name, str(v["samples"]), f"{100 * v['native_word_acc']:.2f}", f"{100 * v['export_word_acc']:.2f}",
                  f"{v['max_logit_diff']:.2g}", str(v["changed_predictions"])] for name, v in res["verify"].items()]
        print_rows(Rows(columns, cells, title=f"{res['format']} vs native", caption="word acc in %",
                        right=frozenset(columns[1:])), output_format(), notes=out)
    if res.get("error"):
        err.print(f"error: {res['error']}", markup=False, highlight=False)
        raise typer.Exit(1)
