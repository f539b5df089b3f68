"""Every malformed experiment file is exit 2 with one line naming the file (and line or key), never a traceback
and never a silent guess: not UTF-8, empty, duplicate keys, a typo of a charset preset, an option that does not
apply to the chosen part."""

import pytest
import yaml
from conftest import tiny_experiment

CASES = {
    "latin1": ("name: café\n".encode("latin-1"), ":1: not UTF-8 (byte 0xe9 at offset 9"),
    "utf16": ("name: a\n".encode("utf-16"), "UTF-16"),
    "empty": (b"# only a comment\n", "the file is empty"),
    "duplicate": (b"name: a\ntrain:\n  lr: 0.1\n  lr: 0.2\n", ":4: not valid YAML: duplicate key 'lr' (first given on line 3)"),
    "charset_typo": (b"data:\n  charset: lower37\n", "data.charset: 'lower37' is not a preset"),
    "groups_with_batch": (b"model:\n  norm: {name: batch, groups: 8}\n", "model.norm.groups: applies to model.norm.name=group"),
    "cpg_with_layer": (b"model:\n  norm: {name: layer, channels_per_group: 4}\n", "model.norm.channels_per_group"),
    "top_level_list": (b"- a\n", "the top level must be a mapping"),
    "charset_empty": (b'data:\n  charset: {chars: ""}\n', "data.charset.chars: must not be empty"),
    "charset_form": (b"data:\n  charset: {char: abc}\n", "data.charset: expected a preset (digits, lower36"),
    "charset_both": (b"data:\n  charset: {chars: abc, file: c.txt}\n", "data.charset.file: unknown key (valid keys: chars)"),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["config show", "train"])
def test_bad_experiment_files_are_one_line_exit_2(cli, tmp_path, case, command):
    data, message = CASES[case]
    path = tmp_path / "exp.yaml"
    path.write_bytes(data)
    code, out, err = cli(*command.split(), path, "--runs-dir", tmp_path / "runs") if command == "train" else \
        cli(*command.split(), path)
    assert code == 2, err
    assert message in err and str(path) in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_literal_and_file_charsets_in_yaml(cli, tmp_path):
    from cvlab.config import load_config
    from cvlab.config.data import CHARSET_PRESETS
    from cvlab.data.charset import PRESETS, resolve_charset

    assert tuple(PRESETS) == CHARSET_PRESETS
    (tmp_path / "chars.txt").write_text("xyz\n", encoding="utf-8")
    for charset, want in ((yaml.safe_load("{chars: 'ab c'}"), "ab c"), ({"file": str(tmp_path / "chars.txt")}, "xyz"),
                          ("digits", "0123456789")):
        cfg = load_config(raw=tiny_experiment(data={"charset": charset}))
        assert resolve_charset(cfg.data.charset) == want
    (tmp_path / "bad.txt").write_bytes("é".encode("latin-1"))
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(tiny_experiment(data={"charset": {"file": str(tmp_path / "bad.txt")}})))
    code, _, err = cli("train", exp, "--runs-dir", tmp_path / "runs")
    assert code == 2 and "bad.txt: not UTF-8" in err, err


def test_merge_keys_may_be_overridden(tmp_path):
    from cvlab.config import load_config

    path = tmp_path / "exp.yaml"
    path.write_text("train: &t {steps: 5, lr: 0.1}\nlog:\n  <<: {every: 3, image_grid: 2}\n  every: 4\n",
                    encoding="utf-8")
    cfg = load_config(path)
    assert cfg.log.every == 4 and cfg.log.image_grid == 2
