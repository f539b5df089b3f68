"""What `cvlab eval` keeps: every evaluation under a key that says what was scored (which data, resolved root,
split and options, which decoder), never two different evaluations under one key, and the `--data` spec, the
resolved root and the decoder in eval.json and eval/index.jsonl; evaluations recorded before that still read."""

from __future__ import annotations

import json
import shlex

import pytest
import torch
import yaml
from conftest import tiny_experiment
from data_fixtures import make_folder

from cvlab.config import Experiment, parse_data_spec
from cvlab.engine.eval.records import data_identity, history, latest, spec_text
from cvlab.models import build_model

KEY = r"best-step3_lower36_{}_{}_[0-9a-f]{{8}}"


@pytest.fixture
def run(tmp_path):
    """A run directory as training leaves it (config.yaml, checkpoints/best.pt at step 3), untrained."""
    exp = tiny_experiment()
    exp["data"]["val"][0]["size"] = 4
    cfg = Experiment.model_validate(exp)
    torch.manual_seed(0)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    torch.save({"model": build_model(cfg.model, 37).model.state_dict(), "step": 3}, run / "checkpoints" / "best.pt")
    return run


def _lines(run) -> list[dict]:
    return [json.loads(s) for s in (run / "eval" / "index.jsonl").read_text(encoding="utf-8").splitlines()]


def test_two_crop_folders_and_two_decoders_get_their_own_keys(run, tmp_path, cli, monkeypatch):
    import re

    from cvlab.engine.eval.lm import build_lm

    realval, crops = make_folder(tmp_path / "realval"), make_folder(tmp_path / "crops")
    (tmp_path / "labels.txt").write_text("hello\nworld\n", encoding="utf-8")
    lm = build_lm([tmp_path / "labels.txt"], 2, tmp_path / "chars.arpa")["path"]
    calls = [("--data", f"folder:{realval}"), ("--data", f"folder:{crops}"),
             ("--data", f"folder:{realval}", "--set", "eval.decoder=beam", "--set", f"eval.lm={lm}")]
    for args in calls:
        code, _, err = cli("eval", run, *args)
        assert code == 0, err
    lines = _lines(run)
    keys = [line["key"] for line in lines]
    assert len(set(keys)) == 3, keys  # before: all three under best-step3_lower36_folder
    assert re.fullmatch(KEY.format("folder-realval", "greedy"), keys[0])
    assert re.fullmatch(KEY.format("folder-crops", "greedy"), keys[1])
    assert re.fullmatch(KEY.format("folder-realval", r"beam10\+lm"), keys[2])

    # what was scored, in the index and in eval.json: the --data spec, the resolved root, the decoder
    assert lines[0]["data"] == [{"spec": f"folder:{realval}", "type": "folder", "root": str(realval.resolve()),
                                 "datasets": ["folder"]}]
    assert lines[0]["decoder"] == {"name": "greedy"}
    assert lines[2]["decoder"] == {"name": "beam", "beam_size": 10, "lm": str(tmp_path / "chars.arpa"),
                                   "lm_weight": 0.5, "lexicon_fallbacks": 0}
    ev = json.loads((run / "eval" / lines[1]["dir"] / "eval.json").read_text(encoding="utf-8"))
    assert ev["data"][0]["root"] == str(crops.resolve()) and ev["data"][0]["spec"] == f"folder:{crops}"
    assert ev["decoder"]["name"] == "greedy" and set(ev["datasets"]) == {"folder"}

    # the same data given another way (a relative root) is the same evaluation: same key, a new time folder
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("eval", run, "--data", "folder:realval")
    assert code == 0, err
    again = _lines(run)[-1]
    assert again["key"] == keys[0] and again["dir"] != lines[0]["dir"]
    assert again["data"][0]["spec"] == "folder:realval" and again["data"][0]["root"] == str(realval.resolve())


def test_options_and_splits_are_part_of_the_identity(run, cli):
    import re

    for size in ("size=5", "size=6"):
        code, _, err = cli("eval", run, "--data", "synth", "--opt", size, "--opt", "max_len=3")
        assert code == 0, err
    a, b = _lines(run)
    assert a["key"] != b["key"] and re.fullmatch(KEY.format("synth", "greedy"), a["key"])
    assert a["data"][0]["spec"] == "synth --opt size=5 --opt max_len=3"
    # the run's own val sets (no --data) are recorded the same way
    code, _, err = cli("eval", run)
    assert code == 0, err
    own = _lines(run)[-1]
    assert re.fullmatch(KEY.format("val", "greedy"), own["key"]) and own["data"][0]["datasets"] == ["val"]


@pytest.mark.parametrize("text,opts", [
    ("folder:/data/my crops", ["labels=gt 2.txt"]),
    ("iiit5k:/data/IIIT5K:train", []),
    ("synth", ["size=10", "seed=5", "style=plain"]),
    ("ic13:/data/ic13:test", ["subset=857"]),
])
def test_the_recorded_spec_gives_back_the_same_data(text, opts):
    """`spec` is what `cvlab eval --data` takes (shell-quoted): read back, it is the same dataset."""
    spec = parse_data_spec(text, opts)
    words = shlex.split(spec_text(spec))
    again = parse_data_spec(words[0], words[2::2])
    assert words[1::2] == ["--opt"] * len(words[2::2])
    assert data_identity(again) == data_identity(spec)
    assert data_identity(spec)["type"] == text.split(":")[0]


def test_evaluations_recorded_before_still_read(run, cli):
    """An eval/ history from before keys said what was scored: old lines read back (data None, the decoder
    from their eval.json), and the newest evaluation is still found."""
    old_dir = run / "eval" / "best-step3_lower36_folder" / "20260101-000000"
    old_dir.mkdir(parents=True)
    old = {"run": str(run), "checkpoint": str(run / "checkpoints" / "best.pt"), "step": 3, "protocol": "lower36",
           "lexicon": "dataset", "decoder": {"name": "greedy"},
           "datasets": {"folder": {"samples": 3, "word_acc": 0.0}}, "combined": {"samples": 3, "word_acc": 0.0}}
    (old_dir / "eval.json").write_text(json.dumps(old), encoding="utf-8")
    (run / "eval" / "index.jsonl").write_text(json.dumps(
        {"time": "20260101-000000", "key": "best-step3_lower36_folder",
         "dir": "best-step3_lower36_folder/20260101-000000", "checkpoint": old["checkpoint"], "step": 3,
         "protocol": "lower36", "datasets": {"folder": {"samples": 3, "word_acc": 0.0}}}) + "\n", encoding="utf-8")
    assert latest(run)[1] == old_dir
    code, _, err = cli("eval", run)
    assert code == 0, err
    first, second = history(run)
    assert first["data"] is None and first["decoder"] == {"name": "greedy"} and first["key"] == old_dir.parent.name
    assert second["data"][0]["datasets"] == ["val"] and second["key"] != first["key"]
    ev, folder = latest(run)
    assert folder == run / "eval" / second["dir"] and set(ev["datasets"]) == {"val"}
    with open(run / "eval" / "index.jsonl", "a", encoding="utf-8") as f:
        f.write("{not json\n")
    with pytest.raises(Exception, match=r"index.jsonl:3: not an evaluation record"):
        history(run)
