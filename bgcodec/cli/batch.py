"""Running a command over many inputs: where each output goes, reading inputs, writing
outputs (never partially, never over an existing file without --force), loading the model
once, and one error line per failed input.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import click

from ..errors import BgcodecError, describe_failure, one_line
from ..files import OutputExists, write_atomically
from .common import EXIT_FAILED, EXIT_OK, STDIO, Fatal, ProgressBar, Reporter, run_ends_cleanly


@dataclass
class Job:
    source: str  # a path, or "-" for stdin
    name: str  # how the input is called in messages
    dest: str | None  # a path, or None for stdout
    make_parent: bool = False  # -o DIR/ that may not exist yet
    error: str | None = None  # a planning error: the input fails with this message

    @property
    def dest_name(self) -> str:
        return "<stdout>" if self.dest is None else self.dest


def _is_dir_target(output: str) -> bool:
    return output.endswith(("/", os.sep)) or os.path.isdir(output)


def plan(ctx: click.Context, inputs: tuple[str, ...], output: str | None, ext: str) -> list[Job]:
    """Decide each input's output; raise UsageError for impossible combinations."""
    if inputs.count(STDIO) > 1:
        raise click.UsageError("'-' (stdin) can be given only once.", ctx)
    to_dir = output is not None and output != STDIO and _is_dir_target(output)
    if len(inputs) > 1 and output is not None and not to_dir:
        what = "stdout" if output == STDIO else f"the single file {output!r}"
        raise click.UsageError(
            f"{len(inputs)} inputs cannot all be written to {what}; give -o a directory "
            "(an existing one, or a path ending in '/') or leave -o out.",
            ctx,
        )

    jobs: list[Job] = []
    claimed: dict[str, str] = {}
    for source in inputs:
        name = "<stdin>" if source == STDIO else source
        stem = "stdin" if source == STDIO else os.path.splitext(os.path.basename(source.rstrip("/" + os.sep)))[0]
        if output == STDIO or (output is None and source == STDIO):
            dest = None
        elif to_dir:
            dest = os.path.join(output, stem + ext)
        elif output is not None:
            dest = output
        else:
            dest = os.path.splitext(source)[0] + ext
        job = Job(source, name, dest, make_parent=to_dir)
        if dest is not None:
            key = os.path.normcase(os.path.abspath(dest))
            if key in claimed:
                job.error = f"{name}: its output {dest} is also the output of {claimed[key]}"
            elif source != STDIO and _same_file(source, dest):
                job.error = f"{name}: the output would overwrite the input"
            else:
                claimed[key] = name
        jobs.append(job)

    if any(job.dest is None for job in jobs) and click.get_binary_stream("stdout").isatty():
        raise click.UsageError(
            "refusing to write binary data to a terminal; use -o FILE or redirect stdout.", ctx
        )
    return jobs


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def read_input(job: Job) -> bytes:
    if job.source == STDIO:
        return click.get_binary_stream("stdin").read()
    try:
        with open(job.source, "rb") as f:
            return f.read()
    except OSError as exc:
        raise BgcodecError(f"{job.name}: cannot read ({exc.strerror or one_line(exc)})") from None


def check_output(job: Job, force: bool) -> None:
    """Fail the input before any work when its output cannot be written: it exists and
    --force is not given, or its folder is missing (and not to be made) or not writable."""
    if job.dest is None:
        return
    if not force and os.path.lexists(job.dest):
        raise OutputExists(f"{job.dest} exists (use --force to overwrite)")
    folder = os.path.dirname(job.dest) or "."
    while job.make_parent and not os.path.exists(folder) and (os.path.dirname(folder) or ".") != folder:
        folder = os.path.dirname(folder) or "."  # the nearest folder that exists will hold the new ones
    if not os.path.isdir(folder):
        raise BgcodecError(f"{job.dest}: cannot write ({folder} is not a folder)")
    if not os.access(folder, os.W_OK):
        raise BgcodecError(f"{job.dest}: cannot write (no permission to write in {folder})")


def check_device(ctx: click.Context, device: str) -> None:
    """A --device that cannot run here (no CUDA) is a usage error, before any work."""
    if device.lower() != "cuda":
        return
    from ..codec import pick_device

    try:
        pick_device(device)
    except BgcodecError as exc:
        raise click.BadParameter(one_line(exc), ctx, param_hint="--device") from None


def write_output(job: Job, write: Callable[[BinaryIO], None], force: bool) -> None:
    """Write via ``write(binary_file)`` to the job's file (atomically) or to stdout."""
    if job.dest is None:
        _write_stdout(write)
    else:
        write_atomically(job.dest, write, overwrite=force, make_parent=job.make_parent)


def _write_stdout(write: Callable[[BinaryIO], None]) -> None:
    buffer = io.BytesIO()  # build it fully first: a failure writes nothing
    write(buffer)
    stdout = click.get_binary_stream("stdout")
    try:
        stdout.write(buffer.getvalue())
        stdout.flush()
    except BrokenPipeError:
        # The reader went away; silence the interpreter's flush at exit.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        raise BgcodecError("<stdout>: broken pipe (the reading program exited)") from None


class CodecHolder:
    """Loads the codec on first use, once for all inputs."""

    def __init__(self, weights: str | None, device: str) -> None:
        self.weights = weights
        self.device = device
        self._codec = None

    def get(self):
        if self._codec is None:
            # Passive OpenMP workers, read when torch is first imported just below: busy-waiting
            # ones collapse when other jobs share the cores.
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            try:
                import torch

                from ..codec import Codec
                from ..resources import idle_cores

                if "OMP_NUM_THREADS" not in os.environ:
                    torch.set_num_threads(idle_cores())  # the result does not depend on it
                self._codec = Codec.load(self.weights, device=self.device)
            except BgcodecError as exc:
                raise Fatal(one_line(exc)) from None
            except Exception as exc:
                raise Fatal(f"cannot load the model: {describe_failure(exc)}") from None
        return self._codec


def run_batch(ctx: click.Context, jobs: list[Job], process: Callable[[Job, Reporter], None], reporter: Reporter,
              verb: str, label: str) -> None:
    """``process`` each job; a failure is one error line and the others go on. Exits with
    the batch's status, after a summary line when there were several inputs."""
    failed = 0
    bar = ProgressBar(label, reporter, shown=len(jobs) > 1 and reporter.shows_bars())
    with run_ends_cleanly(ctx, reporter), bar:
        for done, job in enumerate(jobs):
            bar(done, len(jobs), job.name)
            try:
                if job.error:
                    raise BgcodecError(job.error)
                process(job, reporter)
            except Fatal:
                raise
            except Exception as exc:
                failed += 1
                reporter.error(describe_failure(exc, job.name))
        bar(len(jobs), len(jobs), "")

    if len(jobs) > 1:
        tail = f" ({failed} failed)" if failed else ""
        reporter.summary(f"{verb} {len(jobs) - failed} of {len(jobs)} inputs{tail}")
    ctx.exit(EXIT_FAILED if failed else EXIT_OK)
