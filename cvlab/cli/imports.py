"""`cvlab import dtrb`: other projects' checkpoints as cvlab runs."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import app, guarded, out, plural

import_app = typer.Typer(no_args_is_help=True, help="Turn other projects' checkpoints into cvlab runs.")
app.add_typer(import_app, name="import")


@import_app.command("dtrb", epilog="Examples:\n\n    cvlab import dtrb TPS-ResNet-BiLSTM-Attn.pth\n\n"
                    "    cvlab import dtrb None-VGG-BiLSTM-CTC.pth --arch None-VGG-BiLSTM-CTC\n\n"
                    "    cvlab import dtrb TPS-ResNet-BiLSTM-Attn-case-sensitive.pth --sensitive\n\n"
                    "    cvlab import dtrb my_digits.pth --character 0123456789 --width 160\n\n"
                    "    cvlab eval runs/dtrb-TPS-ResNet-BiLSTM-Attn --data lmdb:~/data/evaluation")
@guarded
def dtrb(
    checkpoint: Path = typer.Argument(..., help="A .pth saved by clovaai/deep-text-recognition-benchmark."),
    arch: str = typer.Option(None, metavar="Trans-Feat-Seq-Pred",
                             help="DTRB's four stages, e.g. TPS-ResNet-BiLSTM-Attn (default: read off the tensor "
                             "names; checked when given). Hosted: None|TPS, VGG|ResNet, None|BiLSTM, CTC|Attn; "
                             "RCNN is not."),
    character: str = typer.Option(None, help="The --character the model was trained with (default: DTRB's "
                                  "0-9a-z)."),
    sensitive: bool = typer.Option(False, "--sensitive", help="Trained with DTRB's --sensitive (94 characters)."),
    height: int = typer.Option(32, help="DTRB's --imgH."),
    width: int = typer.Option(100, help="DTRB's --imgW."),
    max_length: int = typer.Option(25, help="DTRB's --batch_max_length (attention decoding steps - 1)."),
    runs_dir: Path = typer.Option(Path("runs"), metavar="DIR", help="Where the run directory is created."),
    name: str = typer.Option(None, help="Run name (default: dtrb-<arch>)."),
):
    """Convert a DTRB checkpoint into a cvlab run (config.yaml, checkpoints/best.pt, import.json with the
    tensor mapping), which `cvlab eval` and `cvlab predict` then read."""
    from ..engine.import_dtrb import import_dtrb

    info = import_dtrb(checkpoint, arch, character=character, sensitive=sensitive, height=height, width=width,
                       max_length=max_length, runs_dir=runs_dir, name=name)
    out.print(f"{info['arch']}: every tensor mapped ({info['tensors']} DTRB tensors), charset of "
              f"{plural(len(info['charset']), 'character')}", markup=False, highlight=False)
    out.print(f"run: {info['run']}", markup=False, highlight=False)
    out.print(f"score it: cvlab eval {info['run']} --data lmdb:PATH/TO/evaluation", markup=False, highlight=False)
