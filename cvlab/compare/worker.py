"""One compare-norms variant, trained wherever a launcher runs it: a normal run directory written by
`engine.train.loop.train`, with the probes, and its record (`variant.json`): done, diverged, failed or
interrupted. Whatever launched it, the record is the same, so reruns skip finished variants. What the variant's
training reports (group counts build_model adjusted, dropped samples, ...) goes to the launcher's progress when
it runs in the launcher's process, or back in the returned record (`messages`) when it runs in another."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import torch

from ..atomic import write_json
from ..config import Experiment
from ..data.tokenizer import tokenizer_for
from ..engine.device import pick_device
from ..engine.progress import Progress
from ..engine.train.loop import Diverged, TrainingInterrupted, train
from ..engine.train.preflight import adjustment_messages
from ..engine.train.session import prepare
from ..errors import CvlabError
from ..models import build_model
from .mechanism import measure
from .probes import Probe


def adjustments(cfg: Experiment) -> list[str]:
    """What building this variant's model changed from its config (group counts, degenerate group norm
    layers), as preflight prints it: report.md lists them per variant."""
    built = build_model(cfg.model, tokenizer_for(cfg).num_classes, cfg.data.image.channels)
    return adjustment_messages(cfg, built.adjustments, built.degenerate)


def failed(e: BaseException) -> dict:
    """The record of a variant that failed outside training's own handling (its first line, or its type);
    `bad_input` when its settings were refused (a CvlabError: e.g. batch norm at batch size 1)."""
    rec = {"status": "failed", "reason": str(e).splitlines()[0] if str(e) else type(e).__name__}
    if isinstance(e, CvlabError):
        rec["bad_input"] = True
    return rec


class Relay(Progress):
    """A variant's progress: messages indented under the variant's own lines on the launcher's progress when
    there is one (the variant runs in the launcher's process), else kept for the record (`messages`)."""

    def __init__(self, progress: Progress | None):
        self.progress, self.kept = progress, []

    def start(self, total: int, done: int = 0) -> None:
        if self.progress is not None:
            self.progress.start(total, done)

    def update(self, step: int, **values: float) -> None:
        if self.progress is not None:
            self.progress.update(step, **values)

    def message(self, text: str) -> None:
        if self.progress is not None:
            self.progress.message(f"  {text}")
        else:
            self.kept.append(text)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def finished(run_dir: Path, steps: int) -> dict | None:
    """The variant's record if it needs no more work: done at its step budget, or diverged."""
    rec_path = run_dir / "variant.json"
    if not rec_path.is_file():
        return None
    rec = json.loads(rec_path.read_text())
    if rec.get("status") == "diverged":
        return rec
    if rec.get("status") == "done":
        m = run_dir / "metrics.json"
        if m.is_file() and json.loads(m.read_text()).get("step") == steps:
            return rec
    return None


def run_variant(cfg_json: dict, run_dir: str, smooth_every: int, progress: Progress | None = None) -> dict:
    """Train one variant (resuming from last.pt when there is one) and write its variant.json record; returns
    the record, with what training reported under `messages` when no `progress` was handed in (another
    process: the launcher prints them). Module-level, with plain arguments, so a worker process or a cluster
    job can run it."""

    cfg = Experiment.model_validate(cfg_json)
    run_dir = Path(run_dir)
    rec = {"status": "failed", "reason": ""}
    relay = Relay(progress)
    try:
        device = pick_device(cfg.train.device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        session = prepare(cfg, relay)  # writes nothing; the probe needs its optimizer
        probe = Probe(cfg.log.every, smooth_every, cfg.train.grad_clip, session.optimizer)
        # the engine writes the run (config.yaml, env.json, lock), as for any other run
        train(cfg, run_dir, relay, resume=resume, probe=probe, session=session)
        rec = {"status": "done", "reason": "", **measure(cfg, run_dir), "peak_mem_mb": _peak_mem_mb(device.type),
               "adjustments": adjustments(cfg)}
    except Diverged as e:
        rec = {"status": "diverged", "reason": str(e)}
    except (KeyboardInterrupt, TrainingInterrupted):  # Ctrl-C stops the comparison; a rerun resumes this variant
        write_json({"status": "interrupted", "reason": "interrupted"}, run_dir / "variant.json")
        raise
    except Exception as e:  # noqa: BLE001  (one failing variant must not stop the others)
        rec = failed(e)
    write_json(rec, run_dir / "variant.json")
    return {**rec, "messages": relay.kept} if relay.kept else rec


def _peak_mem_mb(device_type: str) -> float:
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
