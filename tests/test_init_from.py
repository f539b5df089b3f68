"""`--init-from`: weights only, charset rows remapped, every tensor accounted for, a foreign backbone refused."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_experiment

from cvlab.config import Experiment
from cvlab.data.tokenizer import build_tokenizer
from cvlab.engine.train.init_from import init_from
from cvlab.errors import CvlabError
from cvlab.models import build_model


def _cfg(charset="abc", head="ctc", sequence=None, backbone=None):
    exp = tiny_experiment()
    exp["data"]["charset"] = {"chars": charset}
    exp["model"]["head"] = {"name": head, **({"hidden": 16} if head == "attention" else {})}
    exp["model"]["sequence"] = sequence or {"hidden": 16, "layers": 1}
    exp["model"]["backbone"] = {"name": "vgg", "size": "tiny", "width": 0.5, **(backbone or {})}
    return Experiment.model_validate(exp)


def _source(tmp_path, cfg, seed=0):
    torch.manual_seed(seed)
    tok = build_tokenizer(cfg.model.head.name, cfg.data.charset.chars)
    model = build_model(cfg.model, tok.num_classes).model
    path = tmp_path / f"src{seed}.pt"
    torch.save({"model": model.state_dict(), "charset": tok.charset, "config": cfg.model_dump(mode="json")}, path)
    return model, path


def _target(cfg, seed=1):
    torch.manual_seed(seed)
    tok = build_tokenizer(cfg.model.head.name, cfg.data.charset.chars)
    return build_model(cfg.model, tok.num_classes).model, tok


@pytest.mark.parametrize("head,key,axis", [("ctc", "head.fc.weight", 0), ("attention", "head.cell.weight_ih", 1)])
def test_charset_change_keeps_the_shared_rows_and_names_the_new_ones(tmp_path, head, key, axis):
    src, path = _source(tmp_path, _cfg("abc", head))
    model, tok = _target(_cfg("cxa", head))
    fresh = model.state_dict()[key].clone()
    report = init_from(model, str(path), tok, head)
    assert report["charset"] == {"shared": 2, "new": ["x"], "dropped": ["b"]}
    assert any(r.startswith(key) for r in report["remapped"])
    w, s = model.state_dict()[key], src.state_dict()[key]
    n = len(tok.specials)
    off = w.shape[axis] - tok.num_classes  # the attention cell's one-hot columns come after the context
    pick = lambda t, i: t.narrow(axis, off + i, 1)  # noqa: E731
    for i in range(n):  # specials to specials
        assert torch.equal(pick(w, i), pick(s, i))
    assert torch.equal(pick(w, n + 0), pick(s, n + 2))  # c
    assert torch.equal(pick(w, n + 2), pick(s, n + 0))  # a
    assert torch.equal(pick(w, n + 1), pick(fresh, n + 1))  # x: new, keeps its initialisation
    assert torch.equal(model.state_dict()["backbone.features.0.0.weight"], src.state_dict()["backbone.features.0.0.weight"])


def test_other_head_and_sequence_list_every_tensor(tmp_path):
    src, path = _source(tmp_path, _cfg("abc", "ctc"))
    model, tok = _target(_cfg("abc", "attention", sequence={"name": "none"}))
    report = init_from(model, str(path), tok, "attention")
    own = set(model.state_dict())
    assert set(report["loaded"]) | set(report["new"]) == own  # every tensor of the new model accounted for
    assert all(k.startswith("backbone.") for k in report["loaded"]) and report["loaded"]
    assert all(k.startswith("head.") for k in report["new"])
    skipped = {s.split(" ")[0] for s in report["skipped"]}
    assert skipped == {k for k in src.state_dict() if k.startswith(("sequence.", "head."))}


def test_a_foreign_backbone_is_refused_naming_the_tensors(tmp_path):
    _, path = _source(tmp_path, _cfg(backbone={"width": 0.5}))
    model, tok = _target(_cfg(backbone={"width": 0.75}))
    with pytest.raises(CvlabError, match=r"train.init_from: .*backbone does not fit.*backbone\.features\.0\.0\.weight"):
        init_from(model, str(path), tok, "ctc")


def test_cli_starts_a_new_run_from_weights(tmp_path, write_exp, cli):
    cfg = _cfg("abcdefghijklmnopqrstuvwxyz")
    _, path = _source(tmp_path, _cfg("abcdefghijklmnopqrstuvwxyz0"))
    exp = cfg.model_dump(mode="json")
    exp["train"].update(steps=1, eval_every=1)
    exp["data"]["train"][0]["size"], exp["data"]["val"][0]["size"] = 16, 4
    exp["log"]["tensorboard"] = False
    code, out, err = cli("train", write_exp(exp), "--runs-dir", tmp_path / "runs", "--init-from", path)
    assert code == 0, err
    assert "remapped to the new charset" in err and "'0'" in err and "head.fc.weight" in err
    run = next((tmp_path / "runs").glob("*/*"))
    saved = json.loads((run / "init_from.json").read_text())
    assert saved["source"] == str(path) and saved["charset"]["dropped"] == ["0"]
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=False)["step"] == 1
    code, _, err = cli("train", write_exp(exp), "--runs-dir", tmp_path / "runs", "--init-from", tmp_path / "nope")
    assert code == 2 and "train.init_from" in err and "Traceback" not in err


def test_config_yaml_names_the_checkpoint_it_started_from(tmp_path, write_exp, cli, monkeypatch):
    """`--init-from runs/src` means "the newest run in runs/src" today, another run tomorrow: config.yaml keeps
    the checkpoint file itself (absolute), init_from.json also what was asked for."""
    import yaml

    cfg = _cfg("abc")
    _, pt = _source(tmp_path, cfg)
    src = tmp_path / "runs" / "src" / "20260101-000000"
    (src / "checkpoints").mkdir(parents=True)
    (src / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    pt.rename(src / "checkpoints" / "best.pt")
    exp = cfg.model_dump(mode="json")
    exp["train"].update(steps=1, eval_every=1)
    exp["data"]["train"][0]["size"], exp["data"]["val"][0]["size"] = 16, 4
    exp["log"]["tensorboard"] = False
    monkeypatch.chdir(tmp_path)  # a relative spec, as typed
    code, _, err = cli("train", write_exp(exp), "--runs-dir", "out", "--init-from", "runs/src")
    assert code == 0, err
    run = next((tmp_path / "out").glob("*/*"))
    resolved = str((src / "checkpoints" / "best.pt").resolve())
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["init_from"] == resolved
    saved = json.loads((run / "init_from.json").read_text())
    assert saved["source"] == resolved and saved["requested"] == "runs/src"
    # a resume asked for as first given (compare-norms resumes its variants from their configs): the same
    # weights, so not a change of train.init_from; config.yaml keeps the file
    from cvlab.config import load_config
    from cvlab.engine.train.loop import train

    asked = load_config(raw={**exp, "train": {**exp["train"], "steps": 2, "init_from": "runs/src"}})
    assert train(asked, run, resume=True)["step"] == 2
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["init_from"] == resolved
    # the recorded run reproduces: its config.yaml trains from the same weights from anywhere
    monkeypatch.chdir(tmp_path / "out")
    code, _, err = cli("train", run / "config.yaml", "--runs-dir", tmp_path / "again")
    assert code == 0 and f"init-from {resolved}" in err, err
