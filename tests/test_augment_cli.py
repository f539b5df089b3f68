"""The `augment` section as users meet it: keyed config errors, and `cvlab augment preview`."""

from __future__ import annotations

import pytest
import yaml
from conftest import tiny_experiment
from PIL import Image

from cvlab.config import dump_config, load_config
from cvlab.errors import CvlabError

OPS = [{"op": "rotate", "degrees": 3}, {"op": "noise"}, {"op": "invert", "p": 0.1}]


@pytest.mark.parametrize("item,expected", [
    ({"op": "rotate", "segments": 4}, "exp.yaml: augment[3].segments: unknown key (valid keys: p, op, degrees)"),
    ({"op": "text_distort", "segments": 0},
     "exp.yaml: augment[3].segments: Input should be greater than or equal to 1"),
    ({"op": "gaussian_blur", "sigma": [2, 1]}, "exp.yaml: augment[3]: sigma must be [low, high] with low <= high"),
    ({"op": "swirl"}, "exp.yaml: augment[3]: unknown op swirl; valid: 'rotate'"),
    ({"p": 0.5}, "exp.yaml: augment[3]: missing `op` (valid: rotate, affine"),
])
def test_config_errors_name_the_list_item_and_key(write_exp, item, expected):
    path = write_exp(tiny_experiment(augment=[*OPS, item]))
    with pytest.raises(CvlabError) as e:
        load_config(path)
    assert str(e.value).startswith(expected.replace("exp.yaml", str(path)))


def test_one_learned_op_at_most(write_exp):
    with pytest.raises(CvlabError, match=r"augment: at most one `learned` op"):
        load_config(write_exp(tiny_experiment(augment=[{"op": "learned"}, {"op": "learned"}])))


def test_set_override_roundtrip_and_cli_error(write_exp, cli):
    path = write_exp(tiny_experiment(augment=[*OPS, {"op": "gaussian_blur"}, {"op": "learned"}]))
    cfg = load_config(path, ["augment.1.std=0.2"])
    assert cfg.augment[1].std == 0.2 and cfg.augment[4].p == 1.0  # learned applies to every image by default
    # what a run writes to config.yaml (ranges as lists) loads back to the same config, as resume needs
    assert load_config(raw=yaml.safe_load(dump_config(cfg))) == cfg
    code, _, err = cli("config", "show", path, "--set", "augment.0.degrees=500")
    assert code == 2 and "augment[0].degrees: Input should be less than or equal to 180" in err
    assert "Traceback" not in err


def test_preview_writes_png(write_exp, cli, tmp_path):
    exp = tiny_experiment(augment=[{"op": "text_distort"}, {"op": "color_jitter"}, {"op": "learned"}])
    out = tmp_path / "sub" / "grid.png"
    code, stdout, err = cli("augment", "preview", write_exp(exp), "--out", out, "--n", "5")
    assert code == 0, err
    assert f"written: {out}" in stdout
    with Image.open(out) as im:
        assert im.format == "PNG"
        assert im.height == 5 * (32 + 2)  # originals, 3 ops, pipeline; 32-pixel rows
        assert im.width > 5 * 64


def test_preview_of_nothing_is_bad_input(write_exp, cli, tmp_path):
    code, _, err = cli("augment", "preview", write_exp(), "--out", tmp_path / "g.png")
    assert code == 2 and "augment: the list is empty" in err
