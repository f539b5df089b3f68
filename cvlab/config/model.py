"""The `model` section: backbone, normalization, activation, sequence stage and head."""

from typing import Literal

from pydantic import Field

from .base import Section


class BackboneCfg(Section):
    name: Literal["vgg"] = "vgg"
    size: Literal["tiny", "small", "standard"] = Field(
        "standard", description="tiny: tests and the demo; standard: the published CRNN shapes"
    )
    norm_at: Literal["crnn", "all"] = Field(
        "crnn", description="crnn: norm after conv 5 and 6 as published; all: after every conv but the last"
    )


class NormCfg(Section):
    name: Literal["batch", "group", "none"] = "batch"
    groups: int = Field(32, ge=1, description="group: number of groups (reduced to a divisor when needed)")
    position: Literal["before_act", "after_act"] = "before_act"


class SequenceCfg(Section):
    name: Literal["bilstm", "none"] = "bilstm"
    layers: int = Field(2, ge=1)
    hidden: int | None = Field(None, ge=1, description="hidden size per direction (default: by backbone size)")


class HeadCfg(Section):
    name: Literal["ctc"] = "ctc"


class ModelCfg(Section):
    backbone: BackboneCfg = BackboneCfg()
    norm: NormCfg = NormCfg()
    act: Literal["relu", "leaky_relu", "tanh", "gelu"] = "relu"
    sequence: SequenceCfg = SequenceCfg()
    head: HeadCfg = HeadCfg()
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the head")
