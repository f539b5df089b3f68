"""`cvlab data check|convert|render|preview`: look at a dataset as cvlab reads it, or write it as a standard LMDB."""

from __future__ import annotations

from pathlib import Path

import typer

from ..config.data import DATASET_TYPES
from ..errors import CvlabError
from .common import SET_HELP, app, err, guarded, is_stdout, out, plural, refuse_stdout, write_stdout

data_app = typer.Typer(no_args_is_help=True, help="Check, convert and preview datasets as downloaded; pre-render synthetic ones.")
app.add_typer(data_app, name="data")

TYPE_HELP = f"Dataset type: {', '.join(DATASET_TYPES)}."
OPT_HELP = "Type-specific key=value, e.g. `--opt level=words` (repeatable; values are YAML)."


def _writable_file(path: Path, option: str) -> None:
    from ..engine.runs.directory import check_writable_file

    check_writable_file(path, option)


def _spec(type_: str | None, root: Path | None, split: str | None, opt: list[str]):
    from ..config.load import build_data_spec

    if not type_:
        raise CvlabError("give --type TYPE (and --root DIR), or an EXPERIMENT file")
    if root is None and type_ != "synth":
        raise CvlabError(f"--root is required for --type {type_} (the folder the dataset was unpacked into)")
    fields, source = {"type": type_}, f"--type {type_}"  # the spec built from the options, never a joined string
    if root is not None:
        fields["root"], source = str(root), f"{source} --root {root}"
    if split:
        fields["split"], source = split, f"{source} --split {split}"
    return build_data_spec(fields, opt, source)


def _build(spec, charset: str, image=None):
    from ..config import DataCfg
    from ..data.loaders import build_dataset

    data = DataCfg() if image is None else DataCfg(image=image)
    return build_dataset(spec, charset, data)


def _print_check(name: str, r: dict, out=out) -> None:
    from rich.text import Text

    out.print(Text.assemble((name, "bold"), f": {plural(r['samples'], 'sample')}, "
                            f"{plural(r['readable'], 'image')} decoded"), highlight=False)
    for note in r["notes"]:
        out.print(f"  {note}", markup=False, highlight=False)
    for title in ("dropped", "adjusted"):
        for reason, n in sorted(r[title].items(), key=lambda kv: -kv[1]):
            ex = "; ".join(r["examples"].get(reason, []))
            out.print(f"  {title} {n}: {reason}" + (f"  e.g. {ex}" if ex else ""), markup=False, highlight=False)
    if r.get("unwritable"):
        ex = "; ".join(r["examples"].get("label has no character in the charset", []))
        out.print(f"  {r['unwritable']} labels have no character in the charset: evaluation scores them as they "
                  f"are, training drops them  e.g. {ex}", markup=False, highlight=False)
    if r["outside_charset"]:
        chars = ", ".join(f"{c!r}×{n}" for c, n in list(r["outside_charset"].items())[:30])
        out.print(f"  characters outside the charset: {chars}", markup=False, highlight=False)
    hist = "  ".join(f"{k}:{v}" for k, v in r["label_lengths"].items())
    out.print(f"  label lengths: {hist}", markup=False, highlight=False)
    if "image_size" in r:
        s = r["image_size"]
        out.print(f"  image width min/median/max {s['width']['min']}/{s['width']['median']:g}/{s['width']['max']}, "
                  f"height {s['height']['min']}/{s['height']['median']:g}/{s['height']['max']}, "
                  f"median aspect {s['aspect_median']:.2f}", markup=False, highlight=False)


@data_app.command("check", epilog="Examples:\n\n    cvlab data check --type ic13 --root ~/data/ic13 --split test\n\n"
                  "    cvlab data check --type iam --root ~/data/iam --opt level=words --json iam.json\n\n"
                  "    cvlab data check experiments/iam_lines.yaml")
@guarded
def check(
    experiment: Path = typer.Argument(None, help="Check every dataset of this experiment (with its charset)."),
    type_: str = typer.Option(None, "--type", help=TYPE_HELP),
    root: Path = typer.Option(None, help="Folder the dataset was unpacked into (original names kept)."),
    split: str = typer.Option(None, help="Split (train, test, ...; IAM: a split list name or file)."),
    opt: list[str] = typer.Option([], "--opt", help=OPT_HELP),
    charset: str = typer.Option("lower36", help="Charset to count characters against (without EXPERIMENT)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the results as JSON (`-`: to stdout, and "
                                  "the report to stderr)."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
):
    """Samples, dropped samples by reason (with examples), characters outside the charset, label lengths,
    image sizes. Decodes every image."""
    from ..config import load_config
    from ..data.charset import resolve_charset
    from ..data.check import check_dataset
    from ..data.loaders import build_dataset, spec_name

    if json_out and not is_stdout(json_out):
        _writable_file(json_out, "--json")
    results = {}
    if experiment is not None:
        cfg = load_config(experiment, set_)
        chars = resolve_charset(cfg.data.charset)
        for split_name in ("train", "val", "test"):
            for n, spec in enumerate(getattr(cfg.data, split_name)):
                # one check per spec (an LMDB tree as a whole): its report counts each drop once
                ds = build_dataset(spec, chars, cfg.data, key=f"data.{split_name}[{n}]")
                name = spec_name(spec)
                err.print(f"checking {split_name}/{name} ({plural(len(ds), 'sample')})", markup=False,
                          highlight=False)
                results[f"{split_name}/{name}"] = check_dataset(ds, chars)
    else:
        chars = resolve_charset(charset)
        spec = _spec(type_, root, split, opt)
        ds = _build(spec, chars)
        results[spec.name or spec.type] = check_dataset(ds, chars)
    for name, r in results.items():
        _print_check(name, r, err if is_stdout(json_out) else out)
    if is_stdout(json_out):
        import json

        write_stdout(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    elif json_out:  # after the results are printed: a write error does not hide them
        from ..atomic import write_json

        write_json(results, json_out)
        out.print(f"written: {json_out}", markup=False, highlight=False)


@data_app.command("convert", epilog="Examples:\n\n"
                  "    cvlab data convert --type svt --root ~/data/svt1 --split test --out lmdb/svt_test\n\n"
                  "    cvlab data convert --type iam --root ~/data/iam --split testset --opt level=lines "
                  "--opt splits_dir=~/data/iam/splits --out lmdb/iam_test")
@guarded
def convert(
    type_: str = typer.Option(None, "--type", help=TYPE_HELP),
    root: Path = typer.Option(None, help="Folder the dataset was unpacked into."),
    split: str = typer.Option(None, help="Split to convert."),
    opt: list[str] = typer.Option([], "--opt", help=OPT_HELP),
    out_dir: Path = typer.Option(..., "--out", help="New folder for data.mdb."),
    charset: str = typer.Option("lower36", help="synth only: the characters its words are drawn from."),
):
    """Write a dataset as a standard LMDB (num-samples, image-%09d, label-%09d; 1-based), original image bytes
    (PNG for crops) and original labels."""
    from ..data.charset import resolve_charset
    from ..data.convert import convert_to_lmdb
    from ..engine.runs.directory import check_writable

    refuse_stdout(out_dir, "--out", "an LMDB folder")
    check_writable(out_dir, "--out")
    ds = _build(_spec(type_, root, split, opt), resolve_charset(charset))
    res = convert_to_lmdb(ds, out_dir, on_progress=lambda n: err.print(f"  {n} written"))
    for line in res["report"]:  # the dataset's report, as `data check` and evaluation print it
        err.print(f"  {line}", markup=False, highlight=False)
    left_out = f" ({res['left_out']} left out: see the report above)" if res["left_out"] else ""
    out.print(f"written {plural(res['written'], 'sample')} to {res['out']}{left_out}", markup=False,
              highlight=False)


@data_app.command("render", epilog="Examples:\n\n"
                  "    cvlab data render experiments/synth_real.yaml --out lmdb/synth_train --jobs 16\n\n"
                  "    cvlab data render experiments/synth_real.yaml --split val --out lmdb/synth_val\n\n"
                  "    cvlab data render --type synth --opt seed=3 --charset alnum62 --n 100000 --out lmdb/synth_100k "
                  "--jobs 4")
@guarded
def render(
    experiment: Path = typer.Argument(None, help="Render this experiment's synthetic datasets of --split, with its "
                                      "charset and image settings."),
    type_: str = typer.Option(None, "--type", help="`synth`: render a spec built from --opt (without EXPERIMENT)."),
    opt: list[str] = typer.Option([], "--opt", help=OPT_HELP),
    charset: str = typer.Option("lower36", help="--type synth: the characters its words are drawn from."),
    split: str = typer.Option(None, help="With EXPERIMENT: the list to render, train (default) or val."),
    n: int = typer.Option(None, "--n", min=1, help="Render samples 0..N-1 (default: the spec's size)."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for data.mdb (several synthetic sets: a sub-folder "
                                 "each). The same command continues an interrupted render there."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Worker processes rendering in parallel."),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
):
    """Pre-render synthetic words into the standard LMDB (num-samples, image-%09d, label-%09d; 1-based; PNG at
    full resolution): sample i is the image and label the experiment renders on the fly for index i. Resumable:
    samples are committed in chunks, and the same command continues a killed render where it stopped (another
    spec into the same --out is refused); `num-samples` is written last, so a half-written LMDB never reads as
    complete. Train on it with `data.train: [{type: lmdb, root: DIR}]`."""
    from ..config import load_config
    from ..data.charset import resolve_charset
    from ..data.render import Interrupted, experiment_targets, refuse_type, render_lmdb, spec_target
    from ..engine.runs.directory import check_writable
    from .progress import make_count_progress

    refuse_stdout(out_dir, "--out", "an LMDB folder")
    if experiment is not None and (type_ or opt):
        raise CvlabError("give an EXPERIMENT or --type synth [--opt key=value ...], not both")
    if experiment is None and (split or set_):
        raise CvlabError(f"{'--split' if split else '--set'} applies to an EXPERIMENT; with --type synth give "
                         f"--opt key=value")
    if experiment is None and type_:
        refuse_type(type_)
    check_writable(out_dir, "--out")
    if experiment is not None:
        targets, notes = experiment_targets(load_config(experiment, set_), split or "train", n)
    else:
        targets, notes = [spec_target(_spec(type_, None, None, opt), resolve_charset(charset), n)], []
    for note in notes:
        err.print(note, markup=False, highlight=False)
    for t in targets:
        dest = out_dir / t.sub if t.sub else out_dir
        try:
            res = render_lmdb(t, dest, jobs=jobs, progress=make_count_progress(err, "render"))
        except Interrupted as e:
            err.print(f"interrupted: {e.done} of {e.total} samples of {t.key} committed to {e.out}; rerun the same "
                      f"command to continue", markup=False, highlight=False)
            raise typer.Exit(130) from None
        if res["complete_before"]:
            out.print(f"{dest}: already holds all {plural(res['n'], 'sample')} of {t.key}; nothing to do",
                      markup=False, highlight=False)
            continue
        rate = res["rendered"] / max(res["seconds"], 1e-9)
        resumed = f", continuing after sample {res['from']}" if res["from"] else ""
        out.print(f"written {plural(res['n'], 'sample')} of {t.key} to {dest} ({res['rendered']} rendered in "
                  f"{res['seconds']:.1f} s, {rate:.0f} samples/s{resumed})", markup=False, highlight=False)


@data_app.command("preview", epilog="Examples:\n\n"
                  "    cvlab data preview --type rimes --root ~/data/rimes --opt level=lines --out rimes.png\n\n"
                  "    cvlab data preview --type synth --out synth.png                 # the MJSynth recipe\n\n"
                  "    cvlab data preview --type synth --opt style=plain --opt 'shadow={p: 1}' --out shadow.png")
@guarded
def preview(
    type_: str = typer.Option(None, "--type", help=TYPE_HELP),
    root: Path = typer.Option(None, help="Folder the dataset was unpacked into."),
    split: str = typer.Option(None, help="Split to show."),
    opt: list[str] = typer.Option([], "--opt", help=OPT_HELP),
    out_file: Path = typer.Option(Path("preview.png"), "--out", help="PNG to write."),
    count: int = typer.Option(32, min=1, help="Samples in the grid."),
    height: int = typer.Option(32, min=8, help="Image height, as `data.image.height`."),
    width: int = typer.Option(128, min=8, help="Maximum width, as `data.image.width` (keep_ratio)."),
    charset: str = typer.Option("lower36", help="synth only: the characters its words are drawn from."),
):
    """A labelled grid of samples, resized as an experiment would see them (keep_ratio)."""
    from ..config import ImageCfg
    from ..data.charset import resolve_charset
    from ..data.preview import preview_grid

    refuse_stdout(out_file, "--out", "a PNG grid")
    _writable_file(out_file, "--out")
    image = ImageCfg(height=height, width=width, channels=3, resize="keep_ratio")
    res = preview_grid(_build(_spec(type_, root, split, opt), resolve_charset(charset), image), out_file, count)
    if res["broken"]:
        err.print(f"{plural(res['broken'], 'picked sample')} had unreadable images (not shown)")
    if not res["out"]:
        raise CvlabError("no readable sample to show")
    out.print(f"written: {res['out']} ({plural(res['shown'], 'sample')})", markup=False, highlight=False)
