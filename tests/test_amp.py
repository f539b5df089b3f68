import pytest
import torch

from cvlab.engine import device as setup
from cvlab.errors import CvlabError

CPU = torch.device("cpu")


def test_auto_is_fp32_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    amp, why = setup.resolve_amp(CPU, "auto")
    assert amp == "none" and "no native bf16" in why
    assert isinstance(setup.autocast(CPU, "auto"), type(setup.autocast(CPU, "none")))


@pytest.mark.parametrize("flag", ["_is_avx512_bf16_supported", "_is_amx_tile_supported"])
def test_auto_is_bf16_where_the_cpu_computes_it(monkeypatch, flag):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: flag == "_is_avx512_bf16_supported")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: flag == "_is_amx_tile_supported")
    assert setup.resolve_amp(CPU, "auto")[0] == "bf16"
    with setup.autocast(CPU, "auto"):
        y = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert y.dtype == torch.bfloat16


def test_explicit_choices_pass_through_and_fp16_needs_cuda():
    assert setup.resolve_amp(CPU, "bf16") == ("bf16", "as configured")
    assert setup.resolve_amp(CPU, "none")[0] == "none"
    with pytest.raises(CvlabError, match="fp16 autocast needs a CUDA device"):
        setup.autocast(CPU, "fp16")


def test_training_says_which_precision_it_picked(tmp_path):
    from cvlab.config import load_config
    from cvlab.engine.train.session import prepare

    messages = []

    class Collect:
        def message(self, text):
            messages.append(text)

        def __getattr__(self, name):
            return lambda *a, **k: None

    cfg = load_config("experiments/quickstart.yaml", ["train.steps=1", "data.val.0.size=4", "train.device=cpu"])
    prepare(cfg, Collect())
    expected = "bf16" if setup.resolve_amp(CPU, "auto")[0] == "bf16" else "off (fp32)"
    assert any(m.startswith(f"device cpu, mixed precision {expected}: ") for m in messages), messages
