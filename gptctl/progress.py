"""Progress reporting without printing: the library reports, the CLI renders.

Library functions take an optional `Progress`; the CLI passes one that draws rich progress
bars on stderr, tests pass nothing (NULL_PROGRESS) or a recorder.
"""

from __future__ import annotations

from typing import Any, Protocol


class Task(Protocol):
    def update(self, advance: float = 1, **fields: Any) -> None: ...

    def close(self) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None = None) -> Task:
        """Start a task (a bar when `total` is known, a spinner otherwise)."""

    def info(self, message: str) -> None:
        """A one-line status message (e.g. 'loading model', 'skipped: cached')."""


class _NullTask:
    def update(self, advance: float = 1, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    def task(self, description: str, total: float | None = None) -> Task:
        return _NullTask()

    def info(self, message: str) -> None:
        pass


NULL_PROGRESS = NullProgress()
