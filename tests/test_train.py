"""A real (tiny) training run through the CLI, read back from what it wrote; then eval on it."""

import json
import re
import shutil

import pytest
import torch
from conftest import tiny_experiment
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cvlab.config import load_config
from cvlab.engine.eval.records import latest as latest_eval
from cvlab.engine.progress import NullProgress
from cvlab.engine.train.loop import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One CLI training run shared by the tests below (6 steps, eval at 3 and 6)."""
    import yaml

    from cvlab.cli import run

    root = tmp_path_factory.mktemp("train")
    exp = root / "exp.yaml"
    exp.write_text(yaml.safe_dump(tiny_experiment()))
    assert run(["train", str(exp), "--runs-dir", str(root / "runs"), "--name", "t1"]) == 0
    (run_dir,) = (root / "runs" / "t1").iterdir()
    return run_dir


def test_run_directory_layout(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"config.yaml", "env.json", "metrics.json", "checkpoints"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert not [p for p in trained.iterdir() if p.is_dir() and p.name != "checkpoints"]  # no stray hparams sub-run
    assert {p.name for p in (trained / "checkpoints").iterdir()} == {"best.pt", "last.pt"}
    env = json.loads((trained / "env.json").read_text())
    assert env["seed"] == 0 and env["torch"] == torch.__version__ and env["device"] == "cpu"
    # the resolved config reloads to the same experiment
    assert load_config(trained / "config.yaml").train.steps == 6


def test_metrics_json_contract(trained):
    m = json.loads((trained / "metrics.json").read_text())
    assert m["step"] == 6
    r = m["datasets"]["val"]
    assert r["samples"] == 24
    assert 0.0 <= r["word_acc"] <= 1.0 and 0.0 <= r["one_minus_ned"] <= 1.0
    # CER/WER are edits over reference length: can exceed 1, never negative or NaN; a 6-step model is wrong on
    # most characters, and 1 − NED agrees with CER about that
    assert 0.0 < r["cer"] < 5.0 and 0.0 < r["wer"] < 5.0 and r["one_minus_ned"] < 0.9
    assert m["best_word_acc"] == pytest.approx(r["word_acc"]) or m["best_word_acc"] > r["word_acc"]


def test_event_files_hold_the_design_tags(trained):
    ea = EventAccumulator(str(trained), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    ea.Reload()
    scalars = set(ea.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/samples_per_s", "val/val/word_acc", "val/val/cer",
            "val/val/one_minus_ned"} <= scalars
    assert [e.step for e in ea.Scalars("val/val/word_acc")] == [3, 6]
    assert [e.step for e in ea.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert all(torch.isfinite(torch.tensor(e.value)) for e in ea.Scalars("train/loss"))
    assert "val/val/samples" in ea.Tags()["images"]
    assert "config/text_summary" in ea.Tags()["tensors"]
    # hparams live in the run's own event file, readable through the hparams plugin
    assert "_hparams_/session_start_info" in ea.PluginTagToContent("hparams")


def test_hparams_that_differ_between_sibling_runs_come_first_and_integers_read_as_integers(tmp_path):
    """Two sibling runs (one parent folder, as TensorBoard shows them) differing in norm and lr: TensorBoard's
    own HParams code (the experiment it builds from the runs, limited to the first 5 columns) lists those two
    first; integers are written as text ("4", not 4.000)."""
    from tensorboard.plugins.hparams import api_pb2, backend_context, metadata
    from torch.utils.tensorboard import SummaryWriter

    from cvlab.engine.train.loop import hparams_of
    from cvlab.engine.train.tensorboard import write_hparams

    base = load_config(raw=tiny_experiment())
    other = load_config(raw=tiny_experiment(model={"norm": {"name": "group"}}, train={"lr": 0.5}))
    contents = {}
    for name, cfg in (("a", base), ("b", other)):
        writer = SummaryWriter(str(tmp_path / name))
        write_hparams(writer, hparams_of(cfg))
        writer.close()
        ea = EventAccumulator(str(tmp_path / name))
        ea.Reload()
        contents[name] = ea.PluginTagToContent(metadata.PLUGIN_NAME)
    assert all(metadata.EXPERIMENT_TAG not in c for c in contents.values())  # no experiment pinning the order
    ctx = backend_context.Context.__new__(backend_context.Context)
    experiment = api_pb2.Experiment(hparam_infos=ctx._compute_hparam_infos(contents))
    backend_context._sort_and_reduce_to_hparams_limit(experiment, 5)
    assert [h.name for h in experiment.hparam_infos][:2] == ["lr", "norm"]
    start = metadata.parse_session_start_info_plugin_data(contents["a"][metadata.SESSION_START_INFO_TAG])
    assert start.hparams["batch_size"].string_value == "4" and start.hparams["steps"].string_value == "6"
    assert start.hparams["lr"].number_value == base.train.lr


def test_eval_reproduces_the_final_metrics_and_writes_eval_json(trained, cli):
    code, out, err = cli("eval", trained, "--checkpoint", "last")
    assert code == 0, err
    ev, folder = latest_eval(trained)
    final = json.loads((trained / "metrics.json").read_text())["datasets"]["val"]
    assert ev["step"] == 6
    assert ev["datasets"]["val"]["word_acc"] == pytest.approx(final["word_acc"])
    assert ev["datasets"]["val"]["cer"] == pytest.approx(final["cer"])
    assert "val" in out and "word acc" in out
    assert re.fullmatch(r"last-step6_lower36_val_greedy_[0-9a-f]{8}", folder.parent.name), folder
    assert ev["data"][0]["spec"].startswith("synth --opt") and ev["decoder"] == {"name": "greedy"}


def test_every_eval_is_kept_with_a_predictions_file_per_dataset(trained, cli):
    import csv

    before = len((trained / "eval" / "index.jsonl").read_text().splitlines()) if (trained / "eval").exists() else 0
    assert cli("eval", trained, "--checkpoint", "last")[0] == 0
    assert cli("eval", trained, "--checkpoint", "last", "--protocol", "dtrb")[0] == 0
    lines = [json.loads(s) for s in (trained / "eval" / "index.jsonl").read_text().splitlines()]
    assert len(lines) == before + 2 and len({s["dir"] for s in lines}) == len(lines)  # nothing overwritten
    ev, folder = latest_eval(trained)
    assert ev["protocol"] == "dtrb" and (folder / "eval.json").is_file()
    with open(folder / "val.predictions.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 24
    assert rows[0]["id"] == "synth seed 1 #0" and rows[0]["index"] == "0"
    r = ev["datasets"]["val"]
    assert sum(int(x["correct"]) for x in rows if x["correct"]) == round(r["word_acc"] * r["samples"])
    assert all(x["correct"] == str(int(x["label_scored"] == x["prediction_scored"])) for x in rows)
    assert 0 <= float(rows[0]["confidence"]) <= 1
    errs = r["errors"]
    assert errs["wrong"] == r["samples"] - round(r["word_acc"] * r["samples"])
    assert len(errs["worst"]) == min(10, errs["wrong"])


def test_eval_on_other_data_and_folder_of_runs(trained, cli):
    code, out, err = cli("eval", trained.parent, "--data", "synth", "--opt", "size=10", "--opt", "seed=5",
                         "--protocol", "raw")
    assert code == 0, err
    ev, _ = latest_eval(trained)
    assert ev["protocol"] == "raw" and ev["datasets"]["synth"]["samples"] == 10
    assert "1−NED %" in out and "rates in %" in err  # not a terminal: tsv rows on stdout, the title on stderr


def test_eval_a_checkpoint_copied_out_of_its_run(trained, cli, tmp_path):
    """The checkpoint carries its config: scored on the run's val set, its eval/ history written beside it."""
    copy = tmp_path / "shared" / "model.pt"
    copy.parent.mkdir()
    shutil.copy(trained / "checkpoints" / "last.pt", copy)
    code, out, err = cli("eval", copy)
    assert code == 0, err
    ev, _ = latest_eval(copy.parent)
    final = json.loads((trained / "metrics.json").read_text())["datasets"]["val"]
    assert ev["datasets"]["val"]["word_acc"] == pytest.approx(final["word_acc"])
    state = torch.load(copy, weights_only=False)
    del state["config"]
    torch.save(state, copy)
    code, _, err = cli("eval", copy)
    assert code == 2 and "carries no config" in err


def test_eval_bad_input(trained, cli, tmp_path):
    assert cli("eval", tmp_path)[0] == 2
    code, _, err = cli("eval", trained, "--data", "synth", "--opt", "colour=red")
    assert code == 2 and "colour" in err
    code, _, err = cli("eval", trained, "--checkpoint", "nope")
    assert code == 2 and "checkpoint not found" in err


def test_training_lowers_the_loss(tmp_path):
    exp = tiny_experiment(train={"steps": 40, "eval_every": 40, "lr": 3e-3, "warmup_steps": 5},
                          log={"every": 1, "image_grid": 0, "tensorboard": True})
    cfg = load_config(raw=exp)
    train(cfg, tmp_path)
    ea = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    ea.Reload()
    losses = [e.value for e in ea.Scalars("train/loss")]
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10


def test_quickstart_experiment_as_shipped_trains_30_steps(cli, tmp_path):
    """The acceptance command: the real experiments/quickstart.yaml, shortened only by --set."""
    from pathlib import Path

    exp = Path(__file__).resolve().parent.parent / "experiments" / "quickstart.yaml"
    code, out, err = cli("train", exp, "--set", "train.steps=30", "--set", "train.threads=1",
                         "--runs-dir", tmp_path)
    assert code == 0, err
    (run_dir,) = (tmp_path / "quickstart").iterdir()
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    ea.Reload()
    assert "train/loss" in ea.Tags()["scalars"] and "val/synth_val/word_acc" in ea.Tags()["scalars"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step"] == 30 and metrics["datasets"]["synth_val"]["samples"] == 1000
    assert "TensorBoard:" in out


def test_unreadable_batch_keeps_step_numbers_and_final_checkpoint(tmp_path):
    """A batch whose only image is corrupt trains nothing but still counts as its step: the run reaches its
    last step (final eval and last.pt) and step numbers stay the sampler's, so a resume stays exact."""
    from data_fixtures import make_folder

    root = make_folder(tmp_path / "data")  # 4 indexed samples, one a truncated JPEG found only at load time
    spec = {"type": "folder", "root": str(root)}
    exp = tiny_experiment(data={"train": [spec], "val": [{**spec, "name": "val"}]},
                          model={"backbone": {"name": "vgg", "size": "tiny"}, "norm": {"name": "group"},
                                 "sequence": {"hidden": 32, "layers": 1}},
                          train={"steps": 8, "batch_size": 1, "eval_every": 4, "warmup_steps": 1, "threads": 1},
                          log={"every": 1, "image_grid": 0, "tensorboard": False})
    class Messages(NullProgress):
        def __init__(self):
            self.lines = []

        def message(self, text):
            self.lines.append(text)

    said = Messages()
    metrics = train(load_config(raw=exp), tmp_path / "run", said)
    assert metrics["step"] == 8
    # the unreadable val image is reported at every evaluation, not once and then silently skipped
    unreadable = [line for line in said.lines if "val images unreadable" in line]
    assert [line.split(":")[0] for line in unreadable] == ["step 4", "step 8"], said.lines
    assert all("broken.jpg" in line for line in unreadable)
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)["step"] == 8


def _caption_colours(grid) -> tuple[int, int]:
    """(green, red) pixel counts of a caption grid: the text is anti-aliased onto white, so a pixel is counted
    by which channel dominates, not by an exact colour."""
    import numpy as np

    g = np.asarray(grid).astype(int)
    r, gr, b = g[..., 0], g[..., 1], g[..., 2]
    return int(((gr - r > 40) & (gr - b > 40)).sum()), int(((r - gr > 40) & (r - b > 40)).sum())


@pytest.mark.parametrize("protocol,label,pred,verdict", [
    ("lower36", "Chaplet", "chaplet", True),  # what word_acc counts right is drawn green
    ("lower36", "Café", "cafe", True),
    ("raw", "Chaplet", "chaplet", False),
    ("alnum62", "Chaplet", "chaplet", False),
    ("lower36", "Chaplet", "chapel", False),
    ("dtrb", "a-b", "ab", None),  # a label the protocol does not score: neither right nor wrong
])
def test_the_sample_grid_judges_as_the_metrics_do(protocol, label, pred, verdict):
    from cvlab.engine.eval.metrics import score
    from cvlab.engine.train.tensorboard import caption_grid, judge

    assert judge(pred, label, protocol) is verdict
    s = score([pred], [label], protocol)
    assert (s["samples"] == 0) if verdict is None else (s["word_acc"] == float(verdict))
    green, red = _caption_colours(caption_grid(torch.zeros(1, 1, 32, 64), [label], [pred], protocol=protocol))
    assert (green > 20 and red == 0) if verdict else (red > 20 and green == 0) if verdict is False else \
        (green == red == 0)


def test_best_checkpoint_rule_breaks_word_accuracy_ties_by_cer():
    from cvlab.engine.train.loop import improves

    assert improves({"word_acc": 0.0, "cer": 0.9}, -1.0, float("inf"))  # the first evaluation always counts
    assert improves({"word_acc": 0.0, "cer": 0.5}, 0.0, 0.9)  # no line read whole yet, fewer character errors
    assert not improves({"word_acc": 0.0, "cer": 0.95}, 0.0, 0.9)
    assert not improves({"word_acc": 0.0, "cer": 0.9}, 0.0, 0.9)  # a tie keeps the earlier checkpoint
    assert improves({"word_acc": 0.3, "cer": 0.99}, 0.2, 0.1)  # word accuracy first
