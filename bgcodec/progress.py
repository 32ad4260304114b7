"""The one way long work reports how far it is: the coder's SGA iterations, the points of a
rate–distortion curve and of an evaluation all call a Progress."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int, str], None]
"""``progress(done, total, label)``: ``done`` of ``total`` steps are finished, and ``label``
names the last one ("" when there is nothing to say)."""


def no_progress(done: int, total: int, label: str) -> None:
    """A Progress that ignores what it is told."""
