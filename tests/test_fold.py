"""Batch norm folded into the convolution before it (cvlab.models.fold): the same logits on every backbone, only
conv -> BN pairs fold (never BN after the activation, group norm or weight norm), the model given stays as it
was, and `cvlab eval` / `cvlab predict` read the same words folded as unfolded on a trained tiny run."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml
from conftest import tiny_experiment
from torch import nn

from cvlab.config import DataCfg, ModelCfg, SynthSpec, parse_data_spec
from cvlab.data.synth import SynthWords
from cvlab.models import BACKBONES, build_model
from cvlab.models.fold import fold_batch_norms, foldable_pairs

torch.set_num_threads(1)  # tiny models: threads only contend


def model_for(backbone: str, norm: str = "batch", position: str | None = None, transform: str = "none"):
    cfg = ModelCfg.model_validate({"backbone": {"name": backbone, "size": "tiny", "width": 0.5, "norm_at": "all"
                                                if backbone in ("vgg", "alexnet") else None},
                                   "norm": {"name": norm, **({"position": position} if position else {})},
                                   "sequence": {"name": "bilstm", "hidden": 16, "layers": 1},
                                   "transform": transform})
    model = build_model(cfg, 12).model
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # running statistics and affine parameters far from their initial 0/1
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.2)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.3)
    return model.eval()


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) < 1e-4)


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("norm", ["batch", "batch_renorm", "sync_batch"])
def test_folded_logits_match_on_every_backbone(backbone, norm):
    model = model_for(backbone, norm)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    folded = fold_batch_norms(model)
    x = torch.rand(3, 1, 32, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert close(folded(x), model(x))
    # every BN follows its conv directly here (before_act; resnet's shortcuts and branch ends too)
    assert len(foldable_pairs(model)) == n_bn > 0
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert folded is not model and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_the_tps_localization_folds_too():
    model = model_for("vgg", transform="tps")
    x = torch.rand(2, 1, 32, 64, generator=torch.Generator().manual_seed(2))
    folded = fold_batch_norms(model)
    with torch.no_grad():
        assert close(folded(x), model(x))
    assert any(name.startswith("transform.") for name, _ in foldable_pairs(model))


def test_channels_last_survives_folding():
    model = model_for("resnet").to(memory_format=torch.channels_last)
    folded = fold_batch_norms(model)
    x = torch.rand(2, 1, 32, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert close(folded(x), model(x))
    conv = next(m for m in folded.backbone.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_batch_norm_after_the_activation_is_not_folded():
    model = model_for("vgg", position="after_act")  # conv -> relu -> BN: the BN does not follow the conv
    assert foldable_pairs(model) == [] and fold_batch_norms(model) is model


@pytest.mark.parametrize("norm", ["group", "layer", "instance", "weight", "none"])
def test_other_norms_are_left_alone(norm):
    model = model_for("resnet", norm)
    assert foldable_pairs(model) == [] and fold_batch_norms(model) is model


def test_a_batch_norm_in_training_mode_is_not_folded():
    model = model_for("vgg").train()  # batch statistics: not an affine map
    assert foldable_pairs(model) == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CRNN with batch norm after every conv, trained a few steps (real running statistics)."""
    from cvlab.cli import run as cli_run

    root = tmp_path_factory.mktemp("fold")
    exp = root / "exp.yaml"
    exp.write_text(yaml.safe_dump(tiny_experiment(
        model={"backbone": {"name": "vgg", "size": "tiny", "norm_at": "all"}, "sequence": {"hidden": 32, "layers": 1}},
        train={"steps": 6, "eval_every": 6, "batch_size": 4, "threads": 1},
        log={"tensorboard": False, "image_grid": 0})))
    assert cli_run(["train", str(exp), "--runs-dir", str(root / "runs"), "--name", "f"]) == 0
    (run_dir,) = (root / "runs" / "f").iterdir()
    return run_dir


def test_eval_folds_by_default_in_float32_only(trained):
    from cvlab.engine.runs.load import inference_model, load_run

    loaded = load_run(trained)
    model, folded, channels_last = inference_model(loaded)
    assert folded == 6 and model is not loaded.model and not foldable_pairs(model)
    assert channels_last and model.backbone.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    loaded = load_run(trained, overrides=("train.amp=bf16",))  # the rounding moves: predictions could change
    assert inference_model(loaded) == (loaded.model, 0, False)
    assert inference_model(loaded, fold_bn=True).folded == 6
    assert inference_model(loaded, channels_last=True).channels_last


def test_eval_and_predict_read_the_same_words_folded_and_unfolded(trained, tmp_path):
    from cvlab.engine.eval.evaluate import evaluate_run
    from cvlab.engine.predict import predict
    from cvlab.engine.runs.load import load_run

    assert len(foldable_pairs(load_run(trained).model)) == 6
    specs = [parse_data_spec("synth", ["size=64", "seed=5", "max_len=5", "style=plain"])]
    runs = {fold: evaluate_run(trained, data=specs, fold_bn=fold) for fold in (True, False)}
    assert runs[True]["inference"]["folded_batch_norms"] == 6 and runs[False]["inference"]["folded_batch_norms"] == 0

    def predictions(res):
        (name,) = res["datasets"]
        with open(f"{res['dir']}/{res['datasets'][name]['predictions']}", newline="") as f:
            return [(r["prediction"], round(float(r["confidence"]), 4)) for r in csv.DictReader(f)]

    a, b = predictions(runs[True]), predictions(runs[False])
    assert len(a) == 64 and a == b  # the same words, confidences equal to 4 places
    assert runs[True]["datasets"].keys() == runs[False]["datasets"].keys()
    for name in runs[True]["datasets"]:
        assert runs[True]["datasets"][name]["word_acc"] == runs[False]["datasets"][name]["word_acc"]
    folder = tmp_path / "imgs"
    folder.mkdir()
    synth = SynthWords(SynthSpec(size=8, seed=9, max_len=5, style="plain"), "0123456789abcdefghijklmnopqrstuvwxyz",
                       DataCfg().image)
    for i in range(8):
        synth.render(i)[0].save(folder / f"{i}.png")
    pa = predict(trained, [str(folder)], fold_bn=True)
    pb = predict(trained, [str(folder)], fold_bn=False)
    assert [r["text"] for r in pa] == [r["text"] for r in pb]
    assert all(abs(x["confidence"] - y["confidence"]) < 1e-4 for x, y in zip(pa, pb, strict=True))


def test_eval_reads_the_same_words_in_channels_last_and_contiguous(trained):
    """channels_last (the CPU float32 default for evaluation) changes the order of sums only."""
    from cvlab.engine.eval.evaluate import evaluate_run

    specs = [parse_data_spec("synth", ["size=64", "seed=6", "max_len=5", "style=plain"])]
    runs = {cl: evaluate_run(trained, data=specs, channels_last=cl) for cl in (True, False)}
    assert runs[True]["inference"]["channels_last"] is True and runs[False]["inference"]["channels_last"] is False

    def predictions(res):
        (name,) = res["datasets"]
        with open(f"{res['dir']}/{res['datasets'][name]['predictions']}", newline="") as f:
            return [(r["prediction"], round(float(r["confidence"]), 4)) for r in csv.DictReader(f)]

    assert predictions(runs[True]) == predictions(runs[False]) and len(predictions(runs[True])) == 64
