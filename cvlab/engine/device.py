"""Where and how a run computes: the device, mixed precision (autocast), and the seeds. Plain functions, no state."""

from __future__ import annotations

import contextlib
import platform
import random
from pathlib import Path

import numpy as np
import torch

from ..errors import CvlabError


def cpu_name() -> str:
    """The CPU's model name, as benchmarks print it beside every figure (Linux's /proc/cpuinfo, else platform's)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise CvlabError(f"train.device: {name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CvlabError(f"train.device: {name} requested but CUDA is not available here (use auto or cpu)")
    return dev


def resolve_amp(device: torch.device, amp: str) -> tuple[str, str]:
    """`train.amp: auto` -> (bf16 | fp16 | none, why). bf16 where the hardware computes it natively (CUDA
    Ampere or newer; CPUs with AVX512-BF16 or AMX), fp16 with a GradScaler on older CUDA GPUs, fp32 elsewhere:
    a CPU without native bf16 emulates it and trains slower than in fp32."""
    if amp != "auto":
        return amp, "as configured"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16", f"{torch.cuda.get_device_name(device)} computes bf16 natively"
        return "fp16", f"{torch.cuda.get_device_name(device)} has no native bf16"
    if device.type == "cpu":
        if torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
            return "bf16", "this CPU computes bf16 natively (AVX512-BF16/AMX)"
        return "none", "this CPU has no native bf16 (no AVX512-BF16/AMX): fp32 is faster here"
    return "none", f"no mixed precision on {device.type}"


def autocast(device: torch.device, amp: str):
    amp = resolve_amp(device, amp)[0]
    if amp == "none":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise CvlabError("train.amp: fp16 autocast needs a CUDA device; use bf16 on CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
