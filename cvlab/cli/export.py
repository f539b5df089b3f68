"""`cvlab export`: a run as an ONNX or TorchScript model, checked against the native one."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import CvlabError
from .common import (
    Rows,
    app,
    err,
    expand_home,
    guarded,
    out,
    output_format,
    plural,
    print_rows,
    refuse_stdout,
)


@app.command(epilog="Examples:\n\n    cvlab export runs/quickstart --format onnx --verify\n\n"
             "    cvlab export runs/quickstart --format torchscript --out crnn.torchscript.pt\n\n"
             "    cvlab export runs/scene_text --checkpoint last --format onnx --tolerance 1e-3\n\n"
             "    cvlab export runs/quickstart --format onnx --quantize int8\n\n"
             "    cvlab export runs/scene_text --quantize int8 --calibration lmdb:~/data/validation --calibration-n 512")
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
    quantize: str = typer.Option(None, "--quantize", metavar="int8",
                                 help="Also write RUN/export/<checkpoint>.int8.onnx (onnxruntime.quantization; "
                                 "--out names it instead) and report fp32 vs int8 word accuracy on the calibration "
                                 "data. Run it with `cvlab eval/predict --backend onnxruntime --int8`."),
    calibration: list[str] = typer.Option([], "--calibration", metavar="DATA_SPEC",
                                          help="int8: data to calibrate and check on, TYPE[:ROOT[:SPLIT]] as eval's "
                                          "--data (repeatable; default: the run's val sets)."),
    opt: list[str] = typer.Option([], "--opt", help="Type-specific key=value for every --calibration (repeatable)."),
    calibration_n: int = typer.Option(256, "--calibration-n", min=1, metavar="N",
                                      help="int8 static: images calibrated on (the first N of the calibration "
                                      "data; all of it is scored)."),
    int8_method: str = typer.Option("static", "--int8-method", metavar="static|dynamic",
                                    help="static: QDQ with calibrated activation ranges (fast int8 convs); "
                                    "dynamic: weights only, activations at run time (no calibration; slower "
                                    "convs on x86)."),
):
    """Export a trained run: images (B, C, H, W) in [0, 1], batch and width dynamic -> logits (B, T, classes).

    Every export is run at two widths against the native model; a difference beyond `--tolerance`, or with
    `--verify` any changed prediction, fails with exit code 1. A JSON file beside the model gives its charset,
    specials, decoding rule and image geometry."""
    from ..engine.export import ExportMismatch, export_run
    from .progress import make_progress

    refuse_stdout(out_path, "--out", "a model (and the JSON beside it)")
    if quantize is not None:
        _quantize(run, fmt, quantize, out_path=out_path, checkpoint=checkpoint, calibration=calibration, opt=opt,
                  n=calibration_n, method=int8_method, verify=verify)
        return
    if calibration or opt:
        raise CvlabError("--calibration and --opt choose int8's calibration data: give --quantize int8 too")
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


def _quantize(run, fmt: str, quantize: str, *, out_path, checkpoint: str, calibration: list[str], opt: list[str],
              n: int, method: str, verify: bool) -> None:
    """`--quantize int8`: the int8 model written, then fp32 vs int8 on the calibration data, one line each."""
    from ..config import parse_data_spec
    from ..engine.quantize import quantize_run
    from .progress import make_progress

    if quantize != "int8":
        raise CvlabError(f"--quantize {quantize}: unknown (valid: int8)")
    if fmt != "onnx":
        raise CvlabError(f"--quantize int8 quantizes the ONNX model: leave --format onnx (not {fmt})")
    if verify:
        raise CvlabError("--verify checks the fp32 export against torch; --quantize int8 reports its own check")
    specs = []
    for text in calibration:  # before any work: a bad spec is one line, exit 2
        try:
            specs.append(parse_data_spec(text, opt))
        except CvlabError as e:
            raise CvlabError(str(e).replace(f"--data {text}", f"--calibration {text}", 1)) from None
    res = quantize_run(run, checkpoint=expand_home(checkpoint), calibration=specs or None, n=n, method=method,
                       out=out_path, progress=make_progress(err, 1))
    c = res["checked_on"]
    how = (f"static QDQ, calibrated on {plural(res['calibration_images'], 'image')}" if res["method"] == "static"
           else "dynamic")
    say = lambda text: out.print(text, markup=False, highlight=False)  # noqa: E731
    say(f"written: {res['path']} and {res['meta']} (int8, {how})")
    say(f"word accuracy on {', '.join(c['datasets'])} ({plural(c['samples'], 'sample')} scored): fp32 "
        f"{100 * c['fp32_word_acc']:.2f} %, int8 {100 * c['int8_word_acc']:.2f} % "
        f"({100 * (c['int8_word_acc'] - c['fp32_word_acc']):+.2f} points)")
    say(f"predictions changed by int8: {c['changed_predictions']} of {c['images']}")
