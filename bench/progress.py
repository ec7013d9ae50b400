"""The progress bar shown while a benchmark runs (on stderr; silent when disabled)."""
from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, Progress as RichProgress, SpinnerColumn, TaskID,
                           TextColumn, TimeElapsedColumn)


class Progress:
    """One bar, reused phase after phase: ``phase(label, total)`` then ``update(done)``."""

    def __init__(self, enabled: bool = True) -> None:
        self.console = Console(stderr=True)
        self.enabled = enabled
        self.bar: RichProgress | None = None
        self.task: TaskID | None = None
        self.prefix = ""

    def __enter__(self) -> "Progress":
        if self.enabled:
            self.bar = RichProgress(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f}"), TimeElapsedColumn(),
                console=self.console, transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task("starting", total=1)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc_info)
            self.bar = None

    def run(self, prefix: str) -> None:
        """Name the scenario and target that the following phases belong to."""
        self.prefix = prefix

    def phase(self, label: str, total: float) -> None:
        if self.bar is not None:
            self.bar.reset(self.task, total=max(total, 1),
                           description=f"{self.prefix}: {label}", completed=0)

    def update(self, completed: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed)

    def log(self, text: str) -> None:
        """A line above the bar (or on stderr without one)."""
        self.console.print(text, highlight=False, markup=False)
