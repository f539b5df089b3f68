"""Distorted val/test sets (`augment:` on a dataset spec): fixed per image, whatever the batching; errors."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_experiment
from data_fixtures import make_folder, make_iiit5k

from cvlab.config import DataCfg, load_config, parse_data_spec
from cvlab.data.charset import PRESETS
from cvlab.data.formats.base import Broken
from cvlab.data.loaders import build_dataset, eval_loader, named_datasets
from cvlab.engine.eval.records import latest
from cvlab.errors import CvlabError

CHARS = PRESETS["lower36"]
WARP = [{"op": "text_distort", "p": 1.0}, {"op": "rotate", "p": 1.0, "degrees": 10}]


def _sets(*specs):
    cfg = load_config(raw={"data": {"image": {"height": 32, "width": 64}, "val": list(specs)}})
    return named_datasets(cfg.data.val, CHARS, cfg.data)


def test_distorted_copy_is_fixed_per_image_and_named_apart():
    plain = {"type": "synth", "size": 12, "seed": 1, "max_len": 5}
    sets = _sets(plain, {**plain, "augment": WARP})
    assert list(sets) == ["synth", "synth_distorted"]
    clean, warped = sets.values()
    for i in range(len(clean)):
        assert clean[i][1] == warped[i][1]                          # labels untouched
        assert (clean[i][0] - warped[i][0]).abs().mean() > 0.01     # every image distorted (p = 1)
    # the same image whatever the access order, the batch size, the worker processes, or a fresh build
    again = list(_sets({**plain, "augment": WARP}).values())[0]
    assert torch.equal(warped[7][0], again[7][0])
    first = torch.cat([im for im, _ in eval_loader(warped, batch_size=5, workers=0)])
    second = torch.cat([im for im, _ in eval_loader(again, batch_size=3, workers=2)])
    assert torch.equal(first, second)


def test_lexicons_and_unreadable_images_survive_distortion(tmp_path):
    data = DataCfg()
    iiit = build_dataset(parse_data_spec(f"iiit5k:{make_iiit5k(tmp_path / 'i')}:test",
                                         ["augment=[{op: rotate, p: 1.0}]"]), CHARS, data)
    assert iiit.lexicons(1)["50"] == ["PRIVATE", "HELLO", "WORLD"]
    assert iiit.report.dropped["image file missing"] == 1           # the report is still found through the wrapper
    _, labels = next(iter(eval_loader(iiit, batch_size=4, workers=0)))
    assert labels.lexicons is not None and len(labels.lexicons) == 2

    folder = build_dataset(parse_data_spec(f"folder:{make_folder(tmp_path / 'f')}",
                                           ["augment=[{op: noise, p: 1.0}]"]), CHARS, data)
    items = [folder[i] for i in range(len(folder))]
    assert sum(isinstance(im, Broken) for im, _ in items) == 1      # the truncated JPEG, passed through as is
    loader = eval_loader(folder, batch_size=8, workers=0)
    (images, labels), = list(loader)
    assert len(labels) == 3 and loader.load_report.total_dropped == 1


@pytest.mark.parametrize("data, expected", [
    ({"train": [{"type": "synth", "augment": [{"op": "rotate"}]}]}, "data.train: item 0 has `augment`"),
    ({"val": [{"type": "synth", "augment": [{"op": "noise"}, {"op": "learned"}]}]},
     "data.val[0].augment: item 1 is `learned`"),
    ({"val": [{"type": "synth", "augment": [{"op": "rotat"}]}]}, "data.val[0].augment[0]: unknown op rotat"),
])
def test_bad_dataset_augment_is_named(data, expected):
    with pytest.raises(CvlabError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        load_config(raw={"data": data})


def test_eval_on_a_distorted_copy(cli, tmp_path, write_exp):
    """Train 2 steps; the val list's distorted copy is scored beside the clean one, in training and by `eval`."""
    exp = tiny_experiment(train={"steps": 2, "eval_every": 2, "batch_size": 2, "threads": 1},
                          log={"tensorboard": False, "image_grid": 0})
    exp["data"]["val"].append({**exp["data"]["val"][0], "name": "val_warped", "augment": WARP})
    code, _, err = cli("train", write_exp(exp), "--runs-dir", tmp_path / "runs", "--name", "t")
    assert code == 0, err
    (run,) = (tmp_path / "runs" / "t").iterdir()
    assert set(json.loads((run / "metrics.json").read_text())["datasets"]) == {"val", "val_warped"}
    code, out, err = cli("eval", run, "--checkpoint", "last", "--data", "synth", "--opt", "size=6",
                         "--opt", "augment=[{op: text_stretch, p: 1.0}]")
    assert code == 0, err
    assert set(latest(run)[0]["datasets"]) == {"synth_distorted"}
