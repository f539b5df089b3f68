"""`cvlab models list|show`, config errors for model keys, and the preflight checks (exit code 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cvlab.config import load_config
from cvlab.errors import CvlabError
from cvlab.models import BACKBONES, HEADS, NORMS, SEQUENCES, build_model

torch.set_num_threads(1)
EXPERIMENTS = sorted((Path(__file__).parent.parent / "experiments").glob("*.yaml"))


def test_models_list_names_every_registered_part(cli):
    code, out, err = cli("models", "list")
    assert code == 0, err
    for name in [*BACKBONES, *NORMS, *SEQUENCES, *HEADS, "tps", "leaky_relu"]:
        assert name in out


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_models_show_passes_on_every_experiment(cli, experiment):
    code, out, err = cli("models", "show", experiment, "--depth", "2")
    assert code == 0, err
    assert "parameters:" in out and "multiply-adds:" in out and "preflight: ok" in out


def test_models_show_prints_the_standard_crnn_count(cli):
    code, out, _ = cli("models", "show", "experiments/quickstart.yaml", "--set", "model.backbone.size=standard",
                       "--set", "model.backbone.norm_at=crnn", "--set", "model.sequence.name=bilstm",
                       "--set", "model.sequence.hidden=256",
                       "--set", "model.sequence.layers=2")
    assert code == 0
    assert "parameters: 8,451,621" in out and "sequence steps: 24" in out


def test_models_show_reports_adjusted_group_counts(cli):
    code, out, _ = cli("models", "show", "experiments/quickstart.yaml", "--set", "model.backbone.name=googlenet",
                       "--set", "model.norm.name=group", "--depth", "1")
    assert code == 0
    assert ("adjusted: model.norm.groups: 32 groups would leave fewer than model.norm.min_channels_per_group=2 "
            "channels per group in 4 channels; using 2 (2 per group)") in out


def test_unknown_and_inapplicable_model_keys_name_the_dotted_key(cli):
    code, _, err = cli("models", "show", "experiments/quickstart.yaml", "--set", "model.backbone.depht=18")
    assert code == 2 and "model.backbone.depht: unknown key" in err
    code, _, err = cli("models", "show", "experiments/quickstart.yaml", "--set", "model.backbone.depth=50")
    assert code == 2 and "model.backbone.depth: vgg has no depth 50 (valid: crnn, 11, 16)" in err
    code, _, err = cli("models", "show", "experiments/quickstart.yaml", "--set", "model.norm.name=bogus")
    assert code == 2 and "model.norm.name" in err and "layer_channels" in err


def test_switching_backbone_and_head_by_override_works():
    cfg = load_config("experiments/quickstart.yaml", ["model.backbone.name=resnet", "model.backbone.depth=18",
                                                      "model.head.name=attention"])
    assert cfg.model.backbone.resolved_depth == 18 and cfg.model.head.max_length == 25


def _preflight(*overrides: str):
    from cvlab.engine.train.preflight import preflight

    cfg = load_config("experiments/quickstart.yaml", ["model.sequence.hidden=16", "model.sequence.layers=1",
                                                      "model.backbone.width=0.5", *overrides])
    return preflight(build_model(cfg.model, 38).model, cfg)


def test_preflight_passes_and_leaves_running_statistics_alone():
    from cvlab.engine.train.preflight import preflight

    cfg = load_config("experiments/quickstart.yaml", ["model.sequence.hidden=16", "model.sequence.layers=1"])
    model = build_model(cfg.model, 37).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert preflight(model, cfg)["steps"] == 24
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training


@pytest.mark.parametrize("overrides,keys", [
    (["train.batch_size=1"], ["model.norm.name=batch", "train.batch_size=1"]),
    (["train.batch_size=1", "model.norm.name=batch_renorm"], ["train.batch_size"]),
    (["data.image.width=32", "data.train.0.max_len=12", "data.val.0.max_len=5"],
     ["data.image.width=32", "data.train.0.max_len"]),
    (["model.head.name=attention", "model.head.max_length=8"], ["model.head.max_length=8", "data.train.0.max_len"]),
    (["data.image.height=8"], ["data.image.height=8", "model.backbone.name=vgg"]),
    (["model.backbone.name=resnet", "model.backbone.depth=null", "data.image.height=16"], ["data.image.height=16"]),
])
def test_preflight_stops_impossible_combinations_naming_the_keys(overrides, keys):
    with pytest.raises(CvlabError) as e:
        _preflight(*overrides)
    for k in keys:
        assert k in str(e.value)


def test_batchnorm_with_batch_size_one_is_exit_code_2_in_train(cli, tmp_path):
    code, _, err = cli("train", "experiments/quickstart.yaml", "--set", "train.batch_size=1", "--runs-dir", tmp_path)
    assert code == 2 and "train.batch_size" in err and "Traceback" not in err


def test_train_with_group_norm_and_attention_head_through_the_cli(cli, write_exp, tmp_path):
    from conftest import tiny_experiment

    exp = tiny_experiment(model={"backbone": {"name": "vgg", "size": "tiny", "norm_at": "all"},
                                 "norm": {"name": "group"}, "head": {"name": "attention", "max_length": 6}},
                          train={"steps": 2, "batch_size": 2, "eval_every": 2, "warmup_steps": 1, "threads": 1},
                          log={"every": 1, "image_grid": 0, "tensorboard": False})
    exp["data"]["val"][0]["size"] = 4
    code, out, err = cli("train", write_exp(exp), "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert "min_channels_per_group=2 channels per group in 16 channels; using 8 (2 per group)" in err, err


def test_the_docs_show_what_models_show_prints_for_the_standard_crnn(cli):
    """docs/models.md quotes `cvlab models show experiments/crnn_standard.yaml`: its totals are the tool's."""
    import re

    docs = (Path(__file__).parent.parent / "docs" / "models.md").read_text(encoding="utf-8")
    block = docs[docs.index("$ cvlab models show experiments/crnn_standard.yaml"):].split("\n$ ", 1)[0]
    quoted = [ln for ln in block.splitlines() if re.match(r"(parameters|multiply-adds|sequence steps): ", ln)]
    assert len(quoted) == 3, block
    code, out, err = cli("models", "show", "experiments/crnn_standard.yaml")
    assert code == 0, err
    for line in quoted:
        assert line in out.splitlines(), (line, out[-400:])
