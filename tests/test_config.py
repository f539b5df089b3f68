import pytest

from cvlab.config import Experiment, load_config
from cvlab.errors import CvlabError


def test_defaults_are_complete():
    cfg = Experiment()
    assert cfg.data.charset == "lower36"
    assert cfg.train.optimizer == "adamw" and cfg.model.head.name == "ctc"


def test_unknown_key_in_file_names_file_and_dotted_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: x\ntrain:\n  stpes: 10\n")
    with pytest.raises(CvlabError) as e:
        load_config(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: train.stpes: unknown key")
    assert "steps" in msg  # lists the valid keys


def test_unknown_key_in_dataset_entry_names_list_index(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("data:\n  val:\n    - {type: synth, sise: 3}\n")
    with pytest.raises(CvlabError, match=r"data\.val\[0\]\.sise: unknown key"):
        load_config(path)


def test_enum_error_lists_choices():
    with pytest.raises(CvlabError, match=r"train\.optimizer: .*'adamw', 'adadelta' or 'sgd'"):
        load_config(raw={}, overrides=["train.optimizer=rmsprop"])


def test_unknown_dataset_type_lists_valid_types():
    with pytest.raises(CvlabError, match=r"data\.train\[0\]: unknown type nope; valid: .*'synth'"):
        load_config(raw={"data": {"train": [{"type": "nope"}]}})


def test_overrides_are_validated_like_the_file():
    cfg = load_config(raw={}, overrides=["train.lr=3e-4", "model.norm.name=group", "data.val.0.size=7"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.model.norm.name == "group"
    assert cfg.data.val[0].size == 7
    with pytest.raises(CvlabError, match=r"train\.bogus: unknown key"):
        load_config(raw={}, overrides=["train.bogus=1"])
    with pytest.raises(CvlabError, match=r"train\.steps: Input should be a valid integer"):
        load_config(raw={}, overrides=["train.steps=many"])
    with pytest.raises(CvlabError, match="expected key.path=value"):
        load_config(raw={}, overrides=["train.steps"])
    with pytest.raises(CvlabError, match="no list item 5"):
        load_config(raw={}, overrides=["data.val.5.size=1"])


def test_cross_field_check_is_reported_with_its_key():
    with pytest.raises(CvlabError, match=r"data\.train\[0\]: min_len \(9\) is larger than max_len \(4\)"):
        load_config(raw={"data": {"train": [{"type": "synth", "min_len": 9, "max_len": 4}]}})


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntrain: {steps: 3\n")
    with pytest.raises(CvlabError, match=rf"{path}:\d+: not valid YAML"):
        load_config(path)


def test_cli_bad_key_exits_2_with_one_line_and_no_traceback(cli, write_exp):
    code, out, err = cli("train", write_exp(), "--set", "train.bogus=1", "--runs-dir", write_exp().parent / "r")
    assert code == 2
    assert "train.bogus" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (write_exp().parent / "r").exists()  # nothing created for a config that never validated


def test_cli_missing_experiment_file(cli, tmp_path):
    code, _, err = cli("train", tmp_path / "nope.yaml")
    assert code == 2 and "experiment file not found" in err


def test_config_show_prints_resolved_config(cli, write_exp):
    code, out, _ = cli("config", "show", write_exp(), "--set", "train.lr=0.5")
    assert code == 0
    assert "lr: 0.5" in out and "warmup_steps:" in out  # overrides applied, defaults filled
