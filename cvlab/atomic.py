"""Files written atomically: a temp file in the same folder, fsync, rename. A reader (or a crash) sees the old
file or the new one, never half of either. Every output cvlab writes goes through here."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import CvlabError


def atomic_write(path: Path, write) -> None:
    """An output that cannot be written (read-only folder, a file where a folder should be, a full disk) is the
    user's to fix: CvlabError naming the path, never a traceback."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise CvlabError(f"{path}: cannot write ({e.strerror or e}); choose a writable location or free space") \
            from None
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    except OSError:
        pass


def write_json(obj, path: Path) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()))


def write_text_atomic(text: str, path: Path) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))
