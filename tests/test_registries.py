"""One list of names per registry: every config Literal that names a registered thing lists exactly the
registry's keys (a name added to one and not the other fails here, not in a user's run). Augment ops: test_augment_ops.py."""

import typing

import pytest

from cvlab.config import DATASET_TYPES, Experiment
from cvlab.data.loaders import DATASETS
from cvlab.engine.eval.protocols import PROTOCOLS
from cvlab.models.build import BACKBONES, TRANSFORMS
from cvlab.models.heads import HEADS
from cvlab.models.norms import ACTS, NORMS
from cvlab.models.sequence import SEQUENCES


def _choices(model, dotted: str) -> set:
    for key in dotted.split("."):
        field = model.model_fields[key]
        model = field.annotation
    args = typing.get_args(model)
    return {a for arg in args for a in (typing.get_args(arg) or [arg]) if a is not type(None)}


@pytest.mark.parametrize("key,registry", [
    ("model.backbone.name", BACKBONES), ("model.transform", TRANSFORMS), ("model.head.name", HEADS),
    ("model.norm.name", NORMS), ("model.act", ACTS), ("model.sequence.name", SEQUENCES),
    ("eval.protocol", PROTOCOLS)])
def test_config_literals_list_the_registry(key, registry):
    assert _choices(Experiment, key) == set(registry)


def test_dataset_types_are_the_loaders_and_the_cli_lists_them():
    from cvlab.cli.data import TYPE_HELP

    assert set(DATASET_TYPES) == set(DATASETS)  # DATASET_TYPES is read from the spec classes' `type` Literals
    assert TYPE_HELP == f"Dataset type: {', '.join(DATASET_TYPES)}."
