"""Augmentation inside the training loop: training batches only; the learned agent trains, is checkpointed and
resumes exactly; the augmented batches are a function of (seed, step); TensorBoard gets the preview grid and the
agent's scalars."""

from __future__ import annotations

import torch
from conftest import tiny_experiment

from cvlab.augment import Pipeline, build_pipeline
from cvlab.config import load_config
from cvlab.engine.train.loop import train

AUGMENT = [{"op": "text_distort", "p": 0.5}, {"op": "color_jitter"}, {"op": "learned", "lr": 0.01}]


def experiment(steps: int, tensorboard: bool = False):
    # constant schedule: a run stopped at step 2 and resumed to 4 follows the same learning rates as a 4-step run
    exp = tiny_experiment(augment=AUGMENT,
                          train={"steps": steps, "eval_every": 2, "schedule": "constant", "warmup_steps": 0},
                          log={"every": 1, "image_grid": 0, "tensorboard": tensorboard})
    return load_config(raw=exp)


def last(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)


def test_agent_learns_and_resumes_exactly(tmp_path, monkeypatch):
    seen = []  # batch sizes that went through the pipeline
    forward = Pipeline.forward
    monkeypatch.setattr(Pipeline, "forward", lambda self, x, gen: seen.append(len(x)) or forward(self, x, gen))
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(experiment(4, tensorboard=True), whole)
    assert seen == [8, 4, 4, 4, 4], "the TensorBoard preview, then the 4 training batches; never the 24 val images"
    train(experiment(2), split)
    halfway = last(split)["augment"]
    train(experiment(4), split, resume=True)

    a, b = last(whole), last(split)
    assert a["step"] == b["step"] == 4
    initial = build_pipeline(experiment(4).augment).learned.agent.state_dict()
    for name, value in a["augment"]["agent"].items():
        assert torch.equal(value, b["augment"]["agent"][name]), f"agent {name} differs after resume"
    assert not torch.equal(a["augment"]["agent"]["head.weight"], initial["head.weight"]), "the agent never learned"
    assert not torch.equal(halfway["agent"]["head.weight"], a["augment"]["agent"]["head.weight"])
    assert a["augment"]["optimizer"]["state"], "the agent's optimizer state is checkpointed"
    # the recognizer saw the same augmented batches in both runs, so it ends with the same weights
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), f"model {name} differs after resume"

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(whole), size_guidance={"images": 0})
    ea.Reload()
    assert "augment/preview" in ea.Tags()["images"]
    scalars = set(ea.Tags()["scalars"])
    assert {"augment/loss_learned", "augment/loss_explored", "augment/agent_move_px"} <= scalars
    assert len(ea.Scalars("augment/loss_learned")) == 4
