"""torchrun on CPU (gloo): 2 processes train what 1 process trains at the same global batch; rank 0 alone
writes; sharded evaluation sums to the single-process result; a 2-process run resumes on 1 process.

One real `torchrun --nproc-per-node 2 -m cvlab train` run (3 steps) is shared by the tests below."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_experiment, torchrun_train

from cvlab.config import load_config
from cvlab.engine.distributed import DistContext
from cvlab.engine.progress import Progress
from cvlab.engine.runs.checkpoint import load_checkpoint
from cvlab.engine.train.start import resume_run, start_run

ROOT = Path(__file__).resolve().parent.parent


def _exp(batch_size: int) -> dict:
    # group norm: no batch statistics, so a rank's half batch normalizes exactly as the whole batch would
    # (plain BN would not: that difference is what sync_batch is for); 25 val samples split 13 / 12
    return tiny_experiment(
        data={"image": {"height": 32, "width": 64},
              "train": [{"type": "synth", "size": 64, "seed": 0, "max_len": 5, "style": "plain"}],
              "val": [{"type": "synth", "name": "val", "size": 25, "seed": 1, "max_len": 5, "style": "plain"}]},
        model={"backbone": {"name": "vgg", "size": "tiny"}, "sequence": {"hidden": 32, "layers": 1},
               "norm": {"name": "group"}},
        train={"steps": 3, "batch_size": batch_size, "eval_every": 3, "warmup_steps": 1, "threads": 1},
        eval={"batch_size": 4}, log={"every": 1, "image_grid": 2})


class Messages(Progress):
    def __init__(self):
        self.lines = []

    def message(self, text: str) -> None:
        self.lines.append(text)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, world: int, port: int, argv: list[str], log: str) -> None:
    """One torchrun worker: the environment torchrun gives it, then the CLI's own entry point. Forked from the
    test process (its imports and font caches are already warm), so 2 ranks start in a fraction of a second."""
    import cvlab.engine.distributed as dist
    from cvlab.cli import run

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist._CTX = None  # a fresh process under torchrun has not joined any group yet
    sys.stdout = sys.stderr = open(log, "w", encoding="utf-8")  # noqa: SIM115  (closed by os._exit)
    code = run(argv)
    sys.stdout.flush()
    dist._shutdown()
    os._exit(code)


def torchrun(argv: list[str], root: Path, world: int = 2) -> list[str]:
    """Run `cvlab ARGV` as `torchrun --nproc-per-node WORLD -m cvlab ARGV` would; returns each rank's output."""
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    port = _free_port()
    logs = [str(root / f"rank{r}.log") for r in range(world)]
    procs = [fork.Process(target=_rank, args=(r, world, port, [str(a) for a in argv], logs[r]))
             for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        if p.is_alive():
            p.kill()
    out = [Path(log).read_text(encoding="utf-8") for log in logs]
    assert [p.exitcode for p in procs] == [0] * world, out
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    (root / "one.yaml").write_text(yaml.safe_dump(_exp(8)))
    one, _ = start_run(load_config(root / "one.yaml"), root / "runs", name="one")  # first: warms what the ranks fork
    (root / "two.yaml").write_text(yaml.safe_dump(_exp(4)))
    printed = torchrun(["train", root / "two.yaml", "--runs-dir", root / "runs", "--name", "two"], root)
    (two,) = (root / "runs" / "two").iterdir()
    return root, two, one, printed


def test_python_m_cvlab_is_the_cli(monkeypatch, capsys):
    """What `torchrun ... -m cvlab` starts."""
    import runpy

    monkeypatch.setattr(sys, "argv", ["cvlab", "train", "--help"])
    with pytest.raises(SystemExit) as e:
        runpy.run_module("cvlab", run_name="__main__")
    assert e.value.code == 0 and "torchrun --nproc-per-node" in capsys.readouterr().out


def test_real_torchrun_launch(tmp_path):
    """The real launcher, two gloo processes on the CPU (~20 s; the suite's other workers overlap it)."""
    proc = torchrun_train(_exp(4), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout + proc.stderr).count("step 3: val word_acc") == 1


def _weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


def _assert_same_weights(a: dict, b: dict, atol: float = 1e-4) -> None:
    """Float tolerance: the same sums in another order, through a few Adam steps (which divide by sqrt(v))."""
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=atol), k


def test_two_processes_train_what_one_process_trains_at_the_same_global_batch(runs):
    from cvlab.engine.train.session import prepare

    _, two, one, printed = runs
    _assert_same_weights(_weights(two), _weights(one))
    # equal because training matched, not because nothing moved: the weights left their initial values by far
    # more than the tolerance
    init = prepare(load_config(one / "config.yaml")).model.state_dict()
    assert max((_weights(two)[k].float() - v.float()).abs().max().item() for k, v in init.items()) > 1e-3
    first = load_checkpoint(one / "checkpoints" / "last.pt")
    assert first["step"] == 3 and first["samples"] == 24 and first["global_batch"] == 8
    ckpt = load_checkpoint(two / "checkpoints" / "last.pt")
    assert ckpt["world"] == 2 and ckpt["global_batch"] == 8 and ckpt["samples"] == 24
    assert not any(k.startswith("module.") for k in ckpt["model"])  # the unwrapped model
    assert "global batch 8 = train.batch_size 4 per process × 2" in printed[0]


def test_rank_zero_alone_writes_and_prints(runs):
    root, two, _, printed = runs
    assert len(list((root / "runs" / "two").iterdir())) == 1  # both ranks trained in one run directory
    names = sorted(p.name for p in two.iterdir())
    assert [n for n in names if n.startswith("events.out.tfevents")].__len__() == 1
    assert {"config.yaml", "env.json", "metrics.json", "status.json", "checkpoints"} <= set(names)
    assert "lock.json" not in names and not list(two.rglob(".*.tmp*"))
    assert json.loads((two / "status.json").read_text())["status"] == "finished"
    assert "step 3: val word_acc" in printed[0] and "run: " in printed[0] and "dataset val: 25" in printed[0]
    assert printed[1] == ""  # rank 1 said nothing


def test_sharded_evaluation_equals_one_process_on_the_same_weights(runs):
    """The 2-process run scored 13 + 12 val samples and summed the counts; `cvlab eval` scores all 25 in one
    process from the same last.pt."""
    from cvlab.engine.eval.evaluate import evaluate_run

    _, two, _, _ = runs
    sharded = json.loads((two / "metrics.json").read_text())["datasets"]["val"]
    single = evaluate_run(two, "last")["datasets"]["val"]
    assert sharded["samples"] == single["samples"] == 25
    for k in ("word_acc", "one_minus_ned", "cer", "wer", "chars", "words", "confidence"):
        assert sharded[k] == pytest.approx(single[k], abs=1e-6), k


def test_shards_are_disjoint_and_uneven_without_padding():
    parts = [list(DistContext(rank=r, world=3).shard(10)) for r in range(3)]
    assert sum(parts, []) == list(range(10)) and [len(p) for p in parts] == [3, 3, 4]
    assert sum((list(DistContext(rank=r, world=4).shard(2)) for r in range(4)), []) == [0, 1]


def test_resume_two_processes_onto_one(runs, tmp_path):
    """Resumed on 1 process at the same global batch (train.batch_size 4 -> 8 may change then), the run
    continues as the 1-process run does: same data order, same weights."""
    import shutil

    _, two, one, _ = runs
    two_copy, one_copy = tmp_path / "two", tmp_path / "one"
    shutil.copytree(two, two_copy)
    shutil.copytree(one, one_copy)
    said = Messages()
    resume_run(two_copy, ["train.steps=5", "train.batch_size=8"], said)
    resume_run(one_copy, ["train.steps=5"])
    _assert_same_weights(_weights(two_copy), _weights(one_copy))
    assert load_checkpoint(two_copy / "checkpoints" / "last.pt")["samples"] == 40
    (line,) = [m for m in said.lines if m.startswith("resuming")]
    assert "trained on 2 process(es) at global batch 8, now 1 at 8" in line and "sample 24" in line


def test_resume_with_another_global_batch_says_so_and_a_changed_per_process_batch_is_refused(runs, tmp_path,
                                                                                              cli):
    import shutil

    _, two, _, _ = runs
    copy = tmp_path / "two"
    shutil.copytree(two, copy)
    code, _, err = cli("train", "--resume", copy, "--set", "train.batch_size=2")  # global 8 -> 2: not the run
    assert code == 2 and "train.batch_size: cannot change when resuming" in err
    said = Messages()
    resume_run(copy, ["train.steps=4"], said)  # 1 process at batch 4: half the global batch, said
    (line,) = [m for m in said.lines if m.startswith("resuming")]
    assert "now 1 at 4" in line and "--set train.batch_size=8" in line
    assert load_checkpoint(copy / "checkpoints" / "last.pt")["samples"] == 28


def test_sync_batch_is_refused_on_cpu(write_exp, tmp_path, cli):
    exp = write_exp(tiny_experiment(model={"norm": {"name": "sync_batch"}}, train={"device": "cpu"}))
    code, _, err = cli("train", exp, "--runs-dir", tmp_path / "runs")
    assert code == 2 and "model.norm.name: sync_batch" in err and "CUDA" in err
    assert not (tmp_path / "runs").exists()


def test_sync_batch_weights_are_plain_batch_norm_weights():
    """What the engine trains under torchrun (SyncBatchNorm) saves weights a plain-BN model loads: eval,
    predict and export build the model with BatchNorm2d."""
    from cvlab.config import ModelCfg
    from cvlab.models import build_model

    def model(norm):
        torch.manual_seed(0)
        cfg = ModelCfg.model_validate({"backbone": {"name": "vgg", "size": "tiny", "width": 0.25},
                                       "norm": {"name": norm}, "sequence": {"hidden": 8, "layers": 1}})
        return build_model(cfg, 11).model

    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model("sync_batch"))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    plain = model("batch")
    plain.load_state_dict(synced.state_dict())  # same keys and shapes
    built = model("sync_batch")
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in built.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in built.modules()) > 0


def _agree(rank: int, port: int, world: int, q) -> None:
    import cvlab.engine.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    dist._CTX = None
    try:
        ctx = dist.context("cpu", timeout_s=1)
        if rank == 1:
            ctx.all_ok(False, "preparation", ValueError("rank 1's data is missing"))
            q.put((rank, "failed"))
        else:
            ctx.all_ok(True, "preparation")
            q.put((rank, "passed"))
    except Exception as e:  # noqa: BLE001
        q.put((rank, f"{type(e).__name__}: {e}"))
    q.close()
    q.join_thread()  # the message is out before os._exit
    dist._shutdown()
    os._exit(0)


def _spawn_agree(world: int, ranks: list[int]) -> dict:
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    q, port = fork.Queue(), _free_port()
    procs = [fork.Process(target=_agree, args=(r, port, world, q)) for r in ranks]
    for p in procs:
        p.start()
    out = dict(q.get(timeout=60) for _ in ranks)
    for p in procs:
        p.join(timeout=30)
    return out


def test_a_rank_that_fails_stops_the_others_with_its_name():
    out = _spawn_agree(2, [0, 1])
    assert out[1] == "failed"
    assert out[0].startswith("RankFailed") and "rank(s) 1 failed during preparation" in out[0]


def test_a_rank_that_never_comes_is_a_clear_error_not_a_hang():
    (message,) = _spawn_agree(2, [0]).values()  # WORLD_SIZE=2, rank 1 never started
    assert message.startswith("CvlabError") and "could not join the process group" in message
    assert "train.dist_timeout=1s" in message


def test_ranks_read_one_sample_stream_and_a_resume_continues_it_at_any_global_batch():
    from cvlab.data.sampling import StepSampler

    one = StepSampler(n=10, batch_size=6, seed=3, steps=4)  # crosses epochs: 24 samples of a 10-sample set
    ranks = [StepSampler(n=10, batch_size=3, seed=3, steps=4, rank=r, world=2) for r in range(2)]
    for step in range(4):
        assert ranks[0].batch(step) + ranks[1].batch(step) == one.batch(step)
    assert [len(list(r)) for r in ranks] == [4, 4]  # the same number of steps on every rank
    # trained 2 steps at global batch 6 (12 samples), resumed on one process at batch 3: the next samples
    resumed = StepSampler(n=10, batch_size=3, seed=3, steps=4, start=2, offset=12)
    assert resumed.batch(2) + resumed.batch(3) == one.batch(2)


def test_a_batch_unreadable_on_one_rank_skips_that_step_on_every_rank(tmp_path):
    """DDP's backward needs every rank: a rank left with no readable image must not sit the step out alone
    (the others would wait in the gradient all-reduce). The ranks agree to skip it, and say so."""
    import io

    from data_fixtures import png_bytes, write_lmdb
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (40, 20), 0).save(buf, format="JPEG")
    write_lmdb(tmp_path / "words", [(png_bytes(30, 32, 60), b"ab"), (buf.getvalue()[:40], b"cut"),
                                    (png_bytes(34, 32, 90), b"ba"), (png_bytes(26, 32, 120), b"a")])
    exp = _exp(1)
    exp["data"]["train"] = [{"type": "lmdb", "root": str(tmp_path / "words")}]
    exp["data"]["val"] = [{"type": "lmdb", "root": str(tmp_path / "words"), "name": "val"}]  # no fonts to load
    exp["train"].update(steps=4, eval_every=4, dist_timeout=30)
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(exp))
    printed = torchrun(["train", tmp_path / "exp.yaml", "--runs-dir", tmp_path / "runs"], tmp_path)
    assert "skipped on every rank because one rank's batch was entirely unreadable" in printed[0]
    assert "image unreadable at load time" in printed[0] and "(rank " in printed[0]
    (run,) = (tmp_path / "runs" / "tiny").iterdir()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
