"""What every command shares: exit codes, the one-line reporter, the progress bar, and the
options whose choices come from the registries that own them.

Imports neither torch nor numpy: ``bgcodec --help`` and ``bgcodec info`` start fast.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import click

from ..config import DEVICES
from ..errors import one_line

PROG = "bgcodec"
STDIO = "-"

EXIT_OK = 0
EXIT_FAILED = 1  # some inputs failed
EXIT_USAGE = 2  # click's own code for usage errors
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)
EXIT_TERMINATED = 143  # SIGTERM


class Fatal(Exception):
    """Stops the whole run (e.g. the model cannot be loaded)."""


class Terminated(BaseException):
    """Raised by the SIGTERM handler so that temporary files are cleaned up."""


@contextlib.contextmanager
def run_ends_cleanly(ctx: click.Context, reporter: "Reporter",
                     fatal: type[Exception] | tuple[type[Exception], ...] = Fatal) -> Iterator[None]:
    """Inside the block, a ``fatal`` error, Ctrl-C or SIGTERM ends the command with one error
    line and its exit status (temporary files are removed on the way out)."""
    try:
        yield
    except fatal as exc:
        reporter.error(one_line(exc))
        ctx.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        reporter.error("interrupted")
        ctx.exit(EXIT_INTERRUPTED)
    except Terminated:
        reporter.error("terminated")
        ctx.exit(EXIT_TERMINATED)


class Reporter:
    """Writes notes, errors and statistics to stderr, one line each, around a progress bar."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar_active = False

    def _emit(self, line: str) -> None:
        if self.bar_active:  # clear the progress bar's line; it redraws on the next step
            click.echo("\r\x1b[K", nl=False, err=True)
        click.echo(line, err=True)

    def error(self, message: str) -> None:
        self._emit(f"{PROG}: error: {one_line(message)}")

    def note(self, name: str, message: str) -> None:
        if not self.quiet:
            self._emit(f"{PROG}: note: {name}: {one_line(message)}")

    def info(self, message: str) -> None:
        if not self.quiet and not self.bar_active:
            self._emit(f"{PROG}: {message}")

    def summary(self, message: str) -> None:
        if not self.quiet:
            self._emit(f"{PROG}: {message}")

    def shows_bars(self) -> bool:
        """Whether a progress bar may be drawn now: not quiet, stderr a terminal, no bar yet."""
        return not self.quiet and not self.bar_active and sys.stderr.isatty()


class ProgressBar:
    """A click progress bar driven as a bgcodec.progress.Progress; drawn on the first report
    (when the total is known) unless ``shown`` is false, and closed by ``close`` or at the
    end of a ``with`` block. While it is drawn, ``reporter`` clears its line before writing."""

    def __init__(self, label: str, reporter: Reporter | None = None, *, shown: bool = True,
                 show_eta: bool = False) -> None:
        self.label, self.reporter, self.shown, self.show_eta = label, reporter, shown, show_eta
        self._bar: Any = None
        self._done = 0

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.shown:
            return
        if self._bar is None:
            self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_pos=True,
                                          show_eta=self.show_eta, item_show_func=lambda item: item)
            self._bar.__enter__()
            if self.reporter is not None:
                self.reporter.bar_active = sys.stderr.isatty()
        self._bar.update(done - self._done, label or None)
        self._done = done

    def close(self) -> None:
        if self._bar is not None:
            if self.reporter is not None:
                self.reporter.bar_active = False
            self._bar.__exit__(None, None, None)
            self._bar = None

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def comma_list(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def lambda_list(ctx: click.Context, param: click.Parameter, value: Any) -> list[float] | None:
    """Click callback: 'L1,L2,...' (or a list) as sorted distinct positive λ values; None stays None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    try:
        values = [float(v) for v in comma_list(value)]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
    if not values or any(not v > 0 for v in values):
        raise click.BadParameter("give one or more positive lambdas")
    return sorted(set(values))


def device_option(what: str = "the model"):
    return click.option("--device", type=click.Choice(DEVICES, case_sensitive=False), default=DEVICES[0],
                        show_default=True, help=f"Where to run {what}; auto uses CUDA when available.")


def weights_option(help: str):
    return click.option("--weights", metavar="PATH", default=None, help=help)
