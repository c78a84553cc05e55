"""Rich progress bars on stderr for the library's `Progress` protocol."""

from __future__ import annotations

from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import (
    Progress as RichProgressBar,
)

from gptctl.cli.common import err


class _RichTask:
    def __init__(self, bar: RichProgress, task_id: int):
        self._bar, self._id = bar, task_id

    def update(self, advance: float = 1, **fields: Any) -> None:
        extra = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        self._bar.rich.update(self._id, advance=advance, extra=extra)

    def close(self) -> None:
        self._bar.rich.update(self._id, visible=True)
        self._bar.rich.stop_task(self._id)


class RichProgress:
    """Draws each library task as a bar with ETA and its live fields (loss, tokens/s, ...)."""

    def __init__(self, enabled: bool = True):
        self.rich = RichProgressBar(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[extra]}"),
            console=err,
            disable=not enabled,
            transient=False,
        )

    def __enter__(self) -> RichProgress:
        self.rich.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.rich.stop()

    def task(self, description: str, total: float | None = None) -> _RichTask:
        return _RichTask(self, self.rich.add_task(description, total=total, extra=""))

    def info(self, message: str) -> None:
        self.rich.console.print(f"[dim]{message}[/]", highlight=False)
