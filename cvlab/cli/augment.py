"""`cvlab augment preview`: see what an experiment's augmentation pipeline does before training with it."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import CvlabError
from .common import SET_HELP, app, guarded, out, plural, refuse_stdout

augment_app = typer.Typer(no_args_is_help=True, help="Inspect an experiment's augmentation pipeline.")
app.add_typer(augment_app, name="augment")


@augment_app.command("preview", epilog="Examples:\n\n"
                     "    cvlab augment preview experiments/quickstart_aug.yaml --out grid.png\n\n"
                     "    cvlab augment preview experiments/quickstart_aug.yaml --out g.png --n 8 --step 1000\n\n"
                     "    cvlab augment preview exp.yaml --out grid.png --set augment.0.p=1.0")
@guarded
def preview(
    experiment: Path = typer.Argument(..., help="Experiment YAML file."),
    out_path: Path = typer.Option(..., "--out", help="PNG file to write."),
    n: int = typer.Option(32, "--n", min=1, max=256, help="Training images to show (columns)."),
    step: int = typer.Option(0, min=0, help="Show the randomness of this training step."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
):
    """Write a grid: the first N training images, then one row per op (applied to every image), then the whole
    pipeline (with its probabilities), with the random numbers of training step STEP on a CPU."""
    from PIL import Image

    from ..augment import build_pipeline, preview_grid, sample_images, step_generator
    from ..config import load_config
    from ..data.loaders import datasets_for
    from ..engine.runs.directory import check_writable_file
    from ..imagegrid import save_image

    refuse_stdout(out_path, "--out", "a PNG grid")
    cfg = load_config(experiment, set_)
    if not cfg.augment:
        raise CvlabError(f"{experiment}: augment: the list is empty, nothing to preview")
    check_writable_file(out_path, "--out")  # before any work
    images = sample_images(datasets_for(cfg, "train"), n)
    grid = preview_grid(build_pipeline(cfg.augment), images, step_generator(cfg.seed, step))
    save_image(Image.fromarray(grid), out_path)  # atomic: a failed write is one line naming the path
    out.print(f"written: {out_path} ({plural(len(images), 'image')} × {plural(len(cfg.augment), 'op')} + pipeline)",
              markup=False, highlight=False)
