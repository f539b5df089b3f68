"""torchrun support: one process per device, torch.distributed underneath (no launcher of our own).

`torchrun --nproc-per-node N -m cvlab train EXP.yaml` sets RANK / WORLD_SIZE / LOCAL_RANK; `context()` reads
them and joins the process group (gloo on CPU, nccl on CUDA) the first time it is asked. Without torchrun it
is a world of one and every helper here is a no-op, so the training loop reads the same either way.

What every rank must agree on goes through the `host` group (gloo, CPU tensors): a failure on one rank, the
stop flag, empty batches, the run directory. Those are known on the host, so agreeing on them never waits for
the GPU; a rank that fails tells the others, who stop with a message naming it instead of sitting in a
collective until the timeout.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import CvlabError

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class RankFailed(CvlabError):
    """Another rank failed; its own message is in its output (torchrun prints which rank exited first)."""


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    host: object = None  # the gloo group for host-side agreement (None: the default group)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ host-side agreement (CPU tensors)

    def host_sum(self, *values: float) -> list[float]:
        """Sum small numbers over ranks (float64 on the host group)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=self.host)
        return t.tolist()

    def all_ok(self, ok: bool, what: str, error: BaseException | None = None) -> None:
        """Every rank calls this after `what`. If any failed, the others raise RankFailed; the failing rank
        re-raises its own `error` afterwards. A failure that rank 0 shares (a config error: every rank reads the
        same file) is printed by rank 0 alone: the others' copies are marked `quiet` for the CLI."""
        if not self.enabled:
            return
        failed = [r for r, flag in enumerate(self.gather(ok)) if not flag]
        if not failed:
            return
        if ok:
            err = RankFailed(f"rank(s) {', '.join(map(str, failed))} failed during {what}; their error is in the "
                             f"output above")
            err.quiet = not self.main
            raise err
        if error is not None and self.rank and 0 in failed:
            error.quiet = True

    def run_on_main(self, fn, what: str):
        """`fn()` on rank 0 alone; its result is sent to every rank. A failure there stops every rank."""
        if not self.enabled:
            return fn()
        value, error = None, None
        if self.main:
            try:
                value = fn()
            except BaseException as e:  # noqa: BLE001  (re-raised below, after the others are told)
                error = e
        self.all_ok(error is None, what, error)
        if error is not None:
            raise error
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.host)
        return box[0]

    @contextlib.contextmanager
    def on_main(self, make_cm, what: str):
        """Enter the context manager `make_cm()` on rank 0 only (opening the run: lock, config.yaml, env.json)."""
        with contextlib.ExitStack() as stack:
            self.run_on_main(lambda: stack.enter_context(make_cm()) and None, what)
            yield

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.host)

    # ------------------------------------------------------------------ device-side reductions

    def sum_(self, tensor: torch.Tensor, op=None) -> torch.Tensor:
        """In-place sum (or `op`) over ranks on the training backend; the tensor stays where it is."""
        if self.enabled:
            dist.all_reduce(tensor, op=op or dist.ReduceOp.SUM)
        return tensor

    def gather(self, obj) -> list:
        """Every rank's `obj` (picklable), on every rank, in rank order."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj, group=self.host)
        return out

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BN running statistics) on every rank: each rank's last training forward moved its
        own, and evaluation and checkpoints must see one model."""
        if self.enabled:
            for b in module.buffers():
                dist.broadcast(b, src=0)

    def shard(self, n: int) -> range:
        """This rank's contiguous slice of n items: disjoint, covering, sizes differ by at most one (no padding,
        no sample scored twice)."""
        return range(self.rank * n // self.world, (self.rank + 1) * n // self.world)


_CTX: DistContext | None = None


def launched() -> bool:
    """Started by torchrun (or anything else that sets the torch.distributed environment) with WORLD_SIZE > 1."""
    return all(k in os.environ for k in ENV) and int(os.environ["WORLD_SIZE"]) > 1


def context(device_name: str = "auto", timeout_s: int = 600) -> DistContext:
    """The process's DistContext, joining the process group on first use under torchrun. `device_name` is
    train.device: under torchrun `auto`/`cuda` become cuda:LOCAL_RANK (see `device_for`)."""
    global _CTX
    if _CTX is not None:
        return _CTX
    if not launched():
        _CTX = DistContext()
        return _CTX
    rank, world, local = (int(os.environ[k]) for k in ENV)
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)  # before the group exists, so nccl binds each rank to its own GPU
    try:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    except Exception as e:  # noqa: BLE001  (a rendezvous that never completes: name what to check)
        raise CvlabError(f"torch.distributed: rank {rank} of {world} could not join the process group within "
                         f"train.dist_timeout={timeout_s}s ({e.__class__.__name__}: {str(e).splitlines()[0]}); "
                         f"check that every rank started and MASTER_ADDR/MASTER_PORT are reachable") from None
    host = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s)) if cuda else None
    _CTX = DistContext(rank, world, local, host)
    atexit.register(_shutdown)
    return _CTX


def _shutdown() -> None:
    with contextlib.suppress(Exception):
        if dist.is_initialized():
            dist.destroy_process_group()


def device_for(name: str, ctx: DistContext) -> str:
    """train.device under torchrun: each rank on its own GPU (cuda:LOCAL_RANK); cpu stays cpu."""
    if not ctx.enabled or name == "cpu":
        return name
    if name.startswith("cuda:"):
        raise CvlabError(f"train.device: {name} pins one GPU, but torchrun runs {ctx.world} processes; use auto or "
                         f"cuda (each rank takes cuda:LOCAL_RANK) and choose GPUs with CUDA_VISIBLE_DEVICES")
    return f"cuda:{ctx.local_rank}" if torch.cuda.is_available() and name in ("auto", "cuda") else name


def wrap(model: torch.nn.Module, device: torch.device, ctx: DistContext) -> torch.nn.Module:
    """The module the training forward goes through: DistributedDataParallel under torchrun (gradients averaged
    over ranks in backward), else the model itself. The session keeps the unwrapped model for everything else
    (state_dict, loss, decode, evaluation), so checkpoints never hold a `module.` prefix."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
