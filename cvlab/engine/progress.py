"""What the engine reports while it works. The CLI hands in a rich implementation; tests use NullProgress."""

from __future__ import annotations

import logging

log = logging.getLogger("cvlab")


class Progress:
    def start(self, total: int, done: int = 0) -> None: ...
    def update(self, step: int, **values: float) -> None: ...
    def message(self, text: str) -> None:
        log.info(text)
    def stop(self) -> None: ...


class NullProgress(Progress):
    pass
