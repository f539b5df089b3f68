"""Experiment configuration: typed sections (one module each), YAML loading, overrides, keyed errors."""

from .data import DATASET_TYPES, DataCfg, DatasetSpec, ImageCfg, SynthSpec
from .load import (
                   apply_override,
                   dump_config,
                   format_error,
                   load_config,
                   load_saved_config,
                   parse_data_spec,
                   read_yaml,
)
from .model import ModelCfg
from .schema import EvalCfg, Experiment, LogCfg, TrainCfg

__all__ = [
    "DATASET_TYPES", "DataCfg", "DatasetSpec", "EvalCfg", "Experiment", "ImageCfg", "LogCfg", "ModelCfg",
    "SynthSpec", "TrainCfg", "apply_override", "dump_config", "format_error", "load_config", "load_saved_config",
    "parse_data_spec", "read_yaml",
]
