"""The `model` section: transform, backbone, normalization, activation, sequence stage and head.

Sections are flat (one class per part, `name` picks the implementation) rather than unions tagged by `name`, so
`--set model.backbone.name=resnet` on a resolved config keeps working: options that do not apply to the chosen
name must stay at their neutral default (`null` / 1), and a validator names the key when they do not.
"""

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from .base import Section

# The depths each backbone accepts; `None` = the backbone's default.
BACKBONE_DEPTHS: dict[str, tuple] = {
    "alexnet": (),
    "vgg": ("crnn", 11, 16),
    "googlenet": (),
    "resnet": ("text", 18, 34, 50),
}


class BackboneCfg(Section):
    name: Literal["alexnet", "vgg", "googlenet", "resnet"] = "vgg"
    size: Literal["tiny", "small", "standard"] = Field(
        "standard", description="channel widths: standard = the paper's, small = 1/2, tiny = 1/4 (vgg crnn: its own tables)"
    )
    width: float = Field(1.0, gt=0, le=4, description="extra multiplier on every channel width (tests use < 1)")
    depth: Literal["crnn", "text", 11, 16, 18, 34, 50] | None = Field(
        None, description="vgg: crnn (default) | 11 | 16; resnet: text (default, [1,2,5,3]) | 18 | 34 | 50"
    )
    norm_at: Literal["crnn", "all"] | None = Field(
        None, description="vgg crnn: crnn = norm after conv 5 and 6 as published (default), all = every conv but the "
        "last; alexnet: all = every conv even for a norm published on the first stages only (lrn: conv 1-2)"
    )
    dropout: float | None = Field(
        None, ge=0, lt=1, description="dropout on the backbone's output (default 0.5 for alexnet as in its head, else 0)"
    )

    # Field validators (not one model validator) so the error names the key: `model.backbone.depth: ...`.
    @field_validator("depth")
    @classmethod
    def _depth_applies(cls, depth, info: ValidationInfo):
        name = info.data.get("name", "vgg")
        allowed = BACKBONE_DEPTHS[name]
        if depth is not None and depth not in allowed:
            valid = ", ".join(map(str, allowed)) if allowed else "none (leave it null)"
            raise ValueError(f"{name} has no depth {depth!r} (valid: {valid})")
        return depth

    @field_validator("norm_at")
    @classmethod
    def _norm_at_applies(cls, norm_at, info: ValidationInfo):
        if norm_at == "crnn" and not (info.data.get("name") == "vgg" and info.data.get("depth") in (None, "crnn")):
            raise ValueError("the `crnn` placement exists only for vgg depth crnn; use `all` or null")
        return norm_at

    @property
    def resolved_depth(self):
        return self.depth if self.depth is not None else (BACKBONE_DEPTHS[self.name] or (None,))[0]


class NormCfg(Section):
    name: Literal["batch", "sync_batch", "batch_renorm", "group", "layer", "layer_channels", "instance", "lrn", "weight", "none"] = "batch"
    groups: int = Field(32, ge=1, description="group: number of groups (reduced to the largest divisor of the channels)")
    channels_per_group: int | None = Field(None, ge=1, description="group: channels per group instead of `groups`")
    min_channels_per_group: int = Field(
        2, ge=1, description="group: fewer groups where `groups` would leave fewer channels per group (2: the "
        "fewest the GN paper's ResNet-50 has, 64 channels in 32 groups; 1 lets a layer become instance norm)")
    renorm_warmup: int = Field(1000, ge=1, description="batch_renorm: steps over which r_max and d_max relax "
                               "(compare-norms scales it with the step count)")
    position: Literal["before_act", "after_act"] | None = Field(
        None, description="null = the norm's published position (before the activation; lrn after the ReLU)")
    ghost_batch: int | None = Field(
        None, ge=1, description="batch: training statistics over consecutive groups of this many samples of each "
        "process's batch, as that many images per GPU without SyncBN (the GN paper's batch size); null = the batch")

    @field_validator("groups", "channels_per_group", "min_channels_per_group", "renorm_warmup", "ghost_batch")
    @classmethod
    def _options_apply(cls, value, info: ValidationInfo):
        neutral = cls.model_fields[info.field_name].default
        name = info.data.get("name", "batch")
        owner = NORM_OPTIONS[info.field_name]
        if name != owner and value != neutral:
            raise ValueError(f"applies to model.norm.name={owner} only (this is {name}); leave it {neutral}")
        return value


# the norm each option belongs to (compare-norms resets them to neutral for the other norms)
NORM_OPTIONS = {"groups": "group", "channels_per_group": "group", "min_channels_per_group": "group",
                "renorm_warmup": "batch_renorm", "ghost_batch": "batch"}


class SequenceCfg(Section):
    name: Literal["bilstm", "gru", "none"] = "bilstm"
    layers: int = Field(2, ge=1)
    hidden: int | None = Field(None, ge=1, description="hidden size per direction (default: by backbone size)")


class HeadCfg(Section):
    name: Literal["ctc", "attention"] = "ctc"
    max_length: int = Field(25, ge=1, description="attention: longest label it can produce (decoding steps - 1)")
    hidden: int | None = Field(None, ge=1, description="attention: decoder LSTM size (default: the sequence stage's)")
    blank_bias: float | None = Field(
        None, description="ctc: the blank class's initial logit bias (default: PyTorch's); > 0 starts the model at "
        "CTC's all-blank solution, < 0 away from it")

    @model_validator(mode="before")
    @classmethod
    def _beam_width_moved(cls, data):
        """`beam_width` (the head's own prefix beam search) became `eval.decoder: beam`: runs saved with its
        default (1) still load; a wider one says where it went."""
        if isinstance(data, dict) and "beam_width" in data:
            data = dict(data)
            if data.pop("beam_width") != 1:
                raise ValueError("beam_width moved to the eval section: set eval.decoder: beam and eval.beam_size "
                                 "(pip install 'cvlab[decode]')")
        return data


class ModelCfg(Section):
    transform: Literal["none", "tps", "tps_dtrb"] = Field(
        "none", description="tps: thin-plate-spline rectifier, 20 fiducial points; tps_dtrb: the same, sampling "
        "as DTRB does (grid_sample align_corners=True), for DTRB's weights (cvlab import dtrb)")
    backbone: BackboneCfg = BackboneCfg()
    norm: NormCfg = NormCfg()
    act: Literal["relu", "leaky_relu", "tanh", "sigmoid", "gelu"] = "relu"
    sequence: SequenceCfg = SequenceCfg()
    head: HeadCfg = HeadCfg()
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the head")
    init: Literal["he", "dtrb", "torch"] = Field(
        "he", description="initial weights: he = kaiming normal (fan_out, ReLU) convolutions, bias 0, norms 1/0 "
        "(torchvision's VGG/ResNet); dtrb = DTRB's train.py (every weight kaiming fan_in, bias 0, BN 1); torch = "
        "PyTorch's defaults (runs saved before this key)")
