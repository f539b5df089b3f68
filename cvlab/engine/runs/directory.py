"""Run directories: `runs/<name>/<timestamp>/`, self-contained (config.yaml, env.json, events, checkpoints),
and the lock that keeps a second process from training into a run that is still being trained."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ... import __version__
from ...atomic import write_json, write_text_atomic
from ...errors import CvlabError

LOCK, STATUS = "lock.json", "status.json"


def check_writable(path: Path, what: str, *, named: Path | None = None) -> None:
    """Fail now (not after an hour of training) when `path` cannot become a writable folder: the one output
    check every command runs before any work. The nearest existing folder is asked (permissions), then really
    written to (a file created and removed at once), since permission bits do not tell a read-only filesystem,
    root's special folders or a network mount that refuses. `named`: the path the message names (the file a
    folder is checked for), default `path`."""
    path = Path(path)
    named = path if named is None else named
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise CvlabError(f"{what} {named}: {probe} is a file, not a folder; choose another {what}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CvlabError(f"{what} {named}: {probe} is not writable; choose a folder you can write to")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".cvlab-write-check-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise CvlabError(f"{what} {named}: cannot write in {probe} ({e.strerror or e}); choose a folder you can "
                         f"write to") from None


def check_writable_file(path: Path, option: str) -> None:
    """An output file's folder must be writable and the path not a folder: checked before any work."""
    path = Path(path)
    if path.is_dir():
        raise CvlabError(f"{option} {path}: is a folder; give a file name")
    check_writable(path.parent, option, named=path)


def new_run_dir(runs_dir: Path, name: str) -> Path:
    check_writable(runs_dir, "--runs-dir")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(runs_dir) / name / stamp
    path, i = base, 1
    while True:
        try:
            path.mkdir(parents=True)  # exist_ok=False: two runs started in the same second get -1, -2, ...
            break
        except FileExistsError:
            path = base.with_name(f"{stamp}-{i}")
            i += 1
        except OSError as e:
            raise CvlabError(f"--runs-dir {runs_dir}: cannot create {path} ({e.strerror})") from None
    return path


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def write_env(run_dir: Path, device: str, seed: int, argv: list[str] | None = None) -> None:
    """env.json; a resumed run appends its command line and time to `resumed`."""
    path = run_dir / "env.json"
    argv = list(sys.argv if argv is None else argv)
    env = read_json(path) if path.exists() else {}
    if env:
        env.setdefault("resumed", []).append({"command": argv, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    else:
        commit = _git("rev-parse", "HEAD")
        env = {
            "command": argv,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "cvlab": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "git_commit": commit,
            "git_dirty": bool(_git("status", "--porcelain")) if commit else None,
            "device": device,
            "cuda_device": torch.cuda.get_device_name() if device.startswith("cuda") else None,
            "threads": torch.get_num_threads(),
            "seed": seed,
        }
    write_json(env, path)


def resolve_run(path: Path) -> Path:
    """A run directory, or a folder of runs (e.g. runs/quickstart): the newest run in it with a checkpoint."""
    path = Path(path)
    if (path / "config.yaml").is_file():
        return path
    if path.is_dir():
        runs = sorted((p.parent.parent for p in path.glob("*/checkpoints/*.pt")), key=lambda p: p.name)
        if runs:
            return runs[-1]
    raise CvlabError(f"{path}: not a run directory (no config.yaml) and no run with checkpoints below it")


# --------------------------------------------------------------------------------------------- the lock

def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is not taken for the owner."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(owner: dict) -> bool:
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    start = _proc_start(pid)
    return owner.get("start") is None or start is None or start == owner.get("start")


def read_lock(run_dir: Path) -> dict | None:
    try:
        owner = json.loads((Path(run_dir) / LOCK).read_text())
        return owner if isinstance(owner, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable or half-written: nobody we can check


def lock_owner(run_dir: Path) -> dict | None:
    """The live process holding the run's lock (a dict with pid, host, since), or None (no lock, or stale)."""
    owner = read_lock(run_dir)
    if not owner:
        return None
    if owner.get("host") != socket.gethostname():
        return owner  # cannot check another machine's processes: assume it is alive
    return owner if _alive(owner) else None


def refuse(run_dir: Path, owner: dict) -> CvlabError:
    where = f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('since')}"
    hint = ("wait for it to finish or stop it" if owner.get("host") == socket.gethostname() else
            f"if that process is gone, delete {Path(run_dir) / LOCK}")
    return CvlabError(f"{run_dir}: the run is being trained by another process ({where}); {hint}")


@contextlib.contextmanager
def run_lock(run_dir: Path, progress=None):
    """Hold `run_dir/lock.json` (pid + host) while training. A live owner refuses (CvlabError); a stale lock
    (its process is gone: SIGKILL, a crash) is taken over and reported through `progress.message`."""
    run_dir = Path(run_dir)
    path = run_dir / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "start": _proc_start(os.getpid()),
          "since": time.strftime("%Y-%m-%dT%H:%M:%S"), "started": time.time()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = lock_owner(run_dir)
            if owner is not None:
                raise refuse(run_dir, owner) from None
            stale = read_lock(run_dir) or {}
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            if progress is not None:
                progress.message(f"{path}: stale lock of pid {stale.get('pid')} ({stale.get('since')}), which no "
                                 f"longer runs; taken over")
            continue
        except OSError as e:
            raise CvlabError(f"{run_dir}: cannot write {LOCK} ({e.strerror}); the run folder must be writable") \
                from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise CvlabError(f"{path}: could not take the lock (another process keeps taking it)")
    try:
        yield me
    finally:
        if (read_lock(run_dir) or {}).get("pid") == me["pid"]:
            with contextlib.suppress(OSError):
                path.unlink()


def remove_run(run_dir: Path, created: bool, names=("config.yaml", "env.json", STATUS, "metrics.json")) -> None:
    """Undo a run that never reached a checkpoint: the whole folder when this process created it, else only
    the files a run writes (a folder handed in by a caller, e.g. a test's tmp dir, keeps everything else)."""
    run_dir = Path(run_dir)
    if created:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for p in [run_dir / n for n in names] + list(run_dir.glob("events.out.tfevents.*")):
        with contextlib.suppress(OSError):
            p.unlink()
    with contextlib.suppress(OSError):
        (run_dir / "checkpoints").rmdir()


@contextlib.contextmanager
def open_run(run_dir: Path, cfg, *, device: str, progress=None, step=lambda: 0):
    """The run's bookkeeping around training: take the lock, write config.yaml and env.json, and on the way out
    status.json (finished / interrupted / failed, with the step and the wall time over all sessions). A new run
    that ends before its first checkpoint (Ctrl-C, an error) is removed: nothing to resume, nothing to keep."""
    from ...config import dump_config

    run_dir = Path(run_dir)
    created = not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir()))  # ours to remove
    new = created or not (run_dir / "config.yaml").exists()
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CvlabError(f"{run_dir}: cannot create the run folder ({e.strerror}); choose a writable location") \
            from None
    t0 = time.time()
    with run_lock(run_dir, progress):  # a live owner refuses here, before anything of theirs is touched
        prior = 0.0 if new else float(read_json(run_dir / STATUS).get("wall_s") or 0.0)
        _remove_partial_writes(run_dir, progress)
        try:
            write_text_atomic(dump_config(cfg), run_dir / "config.yaml")
            write_env(run_dir, device, cfg.seed)
            yield run_dir
        except BaseException as e:
            if new and not any((run_dir / "checkpoints").glob("*.pt")):
                remove_run(run_dir, created)
            else:
                status = "interrupted" if isinstance(e, KeyboardInterrupt) else getattr(e, "status", "failed")
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                write_status(run_dir, status, step=step(), wall_s=prior + time.time() - t0, reason=reason)
            raise
        write_status(run_dir, "finished", step=step(), wall_s=prior + time.time() - t0)


def _remove_partial_writes(run_dir: Path, progress=None) -> None:
    """Temp files of atomic writes (cvlab/atomic.py) that a killed process never renamed: with the lock held,
    nobody else can be writing them. Reported, never silently."""
    partial = [p for d in (run_dir, run_dir / "checkpoints") for p in d.glob(".*.tmp*") if p.is_file()]
    for p in partial:
        with contextlib.suppress(OSError):
            p.unlink()
    if partial and progress is not None:
        progress.message(f"{run_dir}: removed {len(partial)} partly written files of a killed process "
                         f"({', '.join(p.name for p in partial[:3])})")


def write_status(run_dir: Path, status: str, *, step: int, wall_s: float, reason: str = "") -> None:
    write_json({"status": status, "step": step, "wall_s": round(wall_s, 1), "reason": reason,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, Path(run_dir) / STATUS)


def read_json(path: Path) -> dict:
    try:
        obj = json.loads(Path(path).read_text())
        return obj if isinstance(obj, dict) else {}
    except (OSError, ValueError):
        return {}

