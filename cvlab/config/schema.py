"""The whole experiment: `name`, `seed` and the sections. Everything has a default except what cannot."""

from typing import Literal

from pydantic import Field, field_validator

from .augment import AugmentSpec
from .base import Section
from .data import DataCfg
from .model import ModelCfg


class TrainCfg(Section):
    steps: int = Field(3000, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["adamw", "adadelta", "sgd"] = Field(
        "adamw", description="sgd: with momentum (the Group Normalization paper's optimizer)")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (adadelta: usually 1.0; sgd: e.g. 0.1)")
    weight_decay: float = Field(1e-4, ge=0, description="not applied to norm parameters and biases")
    betas: tuple[float, float] = Field((0.9, 0.999), description="adamw only")
    rho: float = Field(0.95, gt=0, lt=1, description="adadelta only")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_steps: int = Field(100, ge=0, description="linear warm-up steps (cosine and constant)")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="cosine floor as a share of lr")
    pct_start: float = Field(0.25, gt=0, lt=1, description="onecycle: share of steps spent rising")
    grad_clip: float | None = Field(5.0, gt=0, description="max global gradient norm (null = off)")
    amp: Literal["none", "auto", "bf16", "fp16"] = Field(
        "none", description="autocast dtype; auto: bf16 where the hardware computes it natively (CUDA, AVX512-BF16/AMX "
        "CPUs), fp16 on older GPUs, fp32 elsewhere; fp16 needs CUDA")
    channels_last: bool = False
    compile: bool = Field(False, description="torch.compile the training forward (compiles on the first steps; "
                          "worth it only on long GPU runs)")
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")
    dist_timeout: int = Field(600, ge=1, description="torchrun: seconds a rank waits for the others (joining, and "
                              "every collective) before failing instead of hanging")
    eval_every: int = Field(500, ge=1, description="evaluate (and write last.pt, best.pt) every N steps and at the end")
    init_from: str | None = Field(
        None, description="start from another run's weights (a run directory, a folder of runs or a .pt file): "
        "weights only, a new optimizer and schedule; charset changes keep the shared characters' rows")
    checkpoint_every: int = Field(
        200, ge=1, description="write last.pt every N steps whatever eval_every says: a killed run loses at most "
        "this many steps (200 ≈ 2-5 minutes of a standard CRNN on a CPU)")
    keep_checkpoints: list[int] = Field(
        default_factory=list, description="steps whose full checkpoint is also kept, as checkpoints/step_<N>.pt "
        "(written atomically when step N is reached, never overwritten): one run scored at several points "
        "(benchmarks/transfer.py); steps past train.steps are never reached")

    @field_validator("keep_checkpoints")
    @classmethod
    def _positive_sorted(cls, steps):
        if any(s < 1 for s in steps):
            raise ValueError(f"steps start at 1: {[s for s in steps if s < 1]}")
        return sorted(set(steps))


class EvalCfg(Section):
    protocol: Literal["lower36", "alnum62", "printable94", "raw", "chinese", "dtrb", "parseq"] = Field(
        "lower36", description="label/prediction normalisation before scoring (README: evaluation protocols); "
        "dtrb and parseq reproduce those projects' test pipelines, filters included"
    )
    lexicon: str | None = Field(
        "dataset", description="lexicon-constrained accuracy: `dataset` (the sets' own lexicons: IIIT5K 50/1k, SVT "
        "50), a word file (one word a line) used for every sample, or null (none)")
    decoder: Literal["greedy", "beam"] = Field(
        "greedy", description="cvlab eval's decoding: greedy, or beam search (ctc: flashlight-text, the [decode] "
        "extra, with eval.lm and lexicon tries; attention: plain torch). Evaluations during training stay greedy")
    beam_size: int = Field(10, ge=1, description="beam: hypotheses kept per step (1 = greedy's answers)")
    lm: str | None = Field(None, description="beam, ctc: a character n-gram LM (ARPA, from `cvlab lm build`)")
    lm_weight: float = Field(0.5, ge=0, description="beam, ctc: weight of the LM's log10 score beside the "
                             "model's natural-log score")
    batch_size: int = Field(128, ge=1)
    max_samples: int | None = Field(None, ge=1, description="evaluate at most N samples per dataset during training")


    @field_validator("lm")
    @classmethod
    def _lm_needs_beam(cls, lm, info):
        if lm is not None and info.data.get("decoder") != "beam":
            raise ValueError("a language model is used by beam search only: set eval.decoder=beam too")
        return lm


class LogCfg(Section):
    every: int = Field(20, ge=1, description="log train scalars every N steps")
    image_grid: int = Field(16, ge=0, description="val samples in the TensorBoard image grid (0 = none)")
    tensorboard: bool = True


class Experiment(Section):
    name: str = Field("experiment", pattern=r"^[\w.\-]+$")
    seed: int = 0
    data: DataCfg = DataCfg()
    augment: list[AugmentSpec] = Field(default_factory=list, description="ordered augmentation ops, applied to "
                                                                       "training batches only")
    model: ModelCfg = ModelCfg()
    train: TrainCfg = TrainCfg()
    eval: EvalCfg = EvalCfg()
    log: LogCfg = LogCfg()

    @field_validator("train")
    @classmethod
    def _ghost_batches_fill_the_batch(cls, train, info):
        model = info.data.get("model")
        ghost = model.norm.ghost_batch if model is not None else None
        if ghost and train.batch_size % ghost:
            raise ValueError(f"batch_size {train.batch_size} is not a multiple of model.norm.ghost_batch {ghost} "
                             "(each group of that many samples stands for one device)")
        data = info.data.get("data")
        if data is not None and data.group_by != "none" and train.batch_size % data.group_size:
            raise ValueError(f"batch_size {train.batch_size} is not a multiple of data.group_size {data.group_size}")
        return train

    @field_validator("augment")
    @classmethod
    def _one_learned_op(cls, ops):
        # one agent per run: its state is checkpointed under a single key
        if sum(a.op == "learned" for a in ops) > 1:
            raise ValueError("at most one `learned` op")
        return ops
