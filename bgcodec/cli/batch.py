"""Running a command over many inputs: where each output goes, reading inputs, writing
outputs (never partially, never over an existing file without --force), loading the model
once, and one error line per failed input.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

import click

from ..errors import BgcodecError, describe_failure, one_line
from ..files import OutputExists, write_atomically
from .common import (EXIT_FAILED, EXIT_OK, EXIT_TERMINATED, STDIO, Fatal, ProgressBar, Reporter, Terminated,
                     run_ends_cleanly)


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


_worker_codecs: dict[tuple[str | None, str], object] = {}
"""The codecs a worker process has loaded, by (weights, device): it loads each once."""


class CodecHolder:
    """Names the codec a command uses and loads it on first use: once per command, and once
    per worker process when the batch runs in several (the holder travels pickled). When a
    batch of one input may use ``tile_workers`` > 1 processes, the tiles of a large image go
    to that many workers, started on the first tiled image (``tile_runner``)."""

    def __init__(self, weights: str | None, device: str) -> None:
        self.weights, self.device = weights, device
        self._codec = None
        self.tile_workers = 1
        self._tile_pool = None
        self._tile_threads: int | None = None  # set when the tile workers are to be forked with the codec loaded here

    def get(self):
        if self._codec is None:
            self._codec = _worker_codecs[(self.weights, self.device)] = self._load()
        return self._codec

    def __getstate__(self) -> tuple[str | None, str]:
        return self.weights, self.device

    def __setstate__(self, state: tuple[str | None, str]) -> None:
        self.__init__(*state)
        self._codec = _worker_codecs.get(state)

    def tile_runner(self, tiles: int):
        """A codec.TileRunner that hands an image's ``tiles`` to the tile workers, or None to
        code them here. Ask before the codec is first needed: if the workers can then be
        forked, the codec is loaded here on one thread, and they share it."""
        if self.tile_workers < 2 or tiles < 2:
            return None
        if self._codec is None and self._tile_pool is None and _can_fork():
            self._tile_threads = self.load_for_workers(min(self.tile_workers, tiles))
        return self._run_tiles

    def _run_tiles(self, work: Callable, tasks: Iterable):
        if self._tile_pool is None:
            self._tile_pool = _worker_pool(self.tile_workers, quiet=True, threads=self._tile_threads)
        return self._tile_pool.map(_run_tile, ((self, work, task) for task in tasks))

    def close(self, at_once: bool = False) -> None:
        """Stop the tile workers, if any were started: when they are idle, or ``at_once``."""
        if self._tile_pool is not None:
            if at_once:
                _stop_pool(self._tile_pool)
            else:
                self._tile_pool.shutdown(wait=True)
            self._tile_pool = None

    def load_for_workers(self, workers: int) -> int:
        """Load the codec here for ``workers`` processes forked from this one, which then start
        without importing torch or reading the weights again. It loads on one thread: a forked
        process can start threads of its own only if its parent never did. Returns the threads
        each worker is to code with."""
        global _workers
        _workers = workers
        torch = _import_torch()
        threads = _coding_threads() or torch.get_num_threads()
        self._codec = _worker_codecs[(self.weights, self.device)] = self._load(threads=1)
        return threads

    def _load(self, threads: int | None = None):
        """The codec, coding on ``threads`` (default: this process's share of the idle cores)."""
        try:
            torch = _import_torch()
            from ..codec import Codec

            threads = threads or _coding_threads()
            if threads:
                torch.set_num_threads(threads)
            return Codec.load(self.weights, device=self.device)
        except BgcodecError as exc:
            raise Fatal(one_line(exc)) from None
        except Exception as exc:
            raise Fatal(f"cannot load the model: {describe_failure(exc)}") from None


def _import_torch():
    # Passive OpenMP workers, read when torch is first imported: busy-waiting ones collapse
    # when other jobs share the cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    return torch


def _coding_threads() -> int | None:
    """This process's share of the idle cores, or None to keep torch's count where the user set
    OMP_NUM_THREADS (the result does not depend on it)."""
    if "OMP_NUM_THREADS" in os.environ:
        return None
    from ..resources import idle_cores

    idle = idle_cores()
    return max(1, min(idle, _cores or idle) // _workers)


_workers = 1
"""How many processes share the batch (set in each worker)."""
_cores: int | None = None
"""The cores -j gives the coding in this process when it codes the inputs itself (None: the idle ones)."""


def _run_tile(holder_work_task: tuple[CodecHolder, Callable, object]):
    """In a tile worker: one tile's work with the worker's codec."""
    holder, work, task = holder_work_task
    return work(holder.get(), task)


Task = Callable[[Job, Reporter], None]
"""What a command does with one input; a picklable object when the batch runs in workers."""


def run_batch(ctx: click.Context, jobs: list[Job], task: Task, reporter: Reporter, verb: str, label: str,
              workers: int | None = 1) -> None:
    """``task`` each job, in ``workers`` processes (None: the idle cores); a failure is one error
    line and the others go on. Exits with the batch's status, after a summary line when there
    were several inputs."""
    global _cores
    if workers is None:
        from ..resources import idle_cores

        workers = idle_cores()
    bar = ProgressBar(label, reporter, shown=len(jobs) > 1 and reporter.shows_bars())
    parallel = workers > 1 and len(jobs) > 1 and all(job.source != STDIO and job.dest is not None for job in jobs)
    holder = getattr(task, "holder", None)
    with run_ends_cleanly(ctx, reporter), bar:
        if parallel:
            failures = _run_in_workers(jobs, task, holder, reporter, bar, min(workers, len(jobs)))
        else:
            _cores = workers
            if holder is not None:
                holder.tile_workers = workers
            try:
                failures = _run_here(jobs, task, reporter, bar)
            except BaseException:  # Ctrl-C, SIGTERM or a fatal error
                if holder is not None:
                    holder.close(at_once=True)
                raise
            if holder is not None:
                holder.close()
        bar(len(jobs), len(jobs), "")
    if len(jobs) > 1:
        tail = f" ({failures} failed)" if failures else ""
        reporter.summary(f"{verb} {len(jobs) - failures} of {len(jobs)} inputs{tail}")
    ctx.exit(EXIT_FAILED if failures else EXIT_OK)


def _run_here(jobs: list[Job], task: Task, reporter: Reporter, bar: ProgressBar) -> int:
    failures = 0
    for done, job in enumerate(jobs):
        bar(done, len(jobs), job.name)
        error = _attempt(task, job, reporter)
        if error:
            failures += 1
            reporter.error(error)
    return failures


def _run_in_workers(jobs: list[Job], task: Task, holder: CodecHolder | None, reporter: Reporter,
                    bar: ProgressBar, workers: int) -> int:
    """The jobs spread over worker processes that share the model loaded here (where they can
    be forked) or each load it once; their notes and statistics go to stderr as they come,
    errors are counted and printed here."""
    import concurrent.futures

    threads = holder.load_for_workers(workers) if holder is not None and _can_fork() else None
    failures = 0
    with _worker_pool(workers, reporter.quiet, threads) as pool:
        pending = {pool.submit(_work, task, job): job for job in jobs}
        try:
            for done, future in enumerate(concurrent.futures.as_completed(pending), 1):
                fatal, error = future.result()
                if fatal:
                    raise Fatal(fatal)
                if error:
                    failures += 1
                    reporter.error(error)
                bar(done, len(jobs), pending[future].name)
        except BaseException:  # Ctrl-C, SIGTERM or a fatal error: stop the workers; they remove their temporary files
            _stop_pool(pool)
            raise
    return failures


def _can_fork() -> bool:
    # Forking is fast, but only safe before torch has been imported here (or imported by
    # load_for_workers, which starts no threads).
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods() and "torch" not in sys.modules


def _worker_pool(workers: int, quiet: bool, threads: int | None = None):
    """A process pool whose workers take their share of the idle cores and load the model once,
    or, forked after load_for_workers, code on ``threads`` with the codec loaded here."""
    import concurrent.futures
    import multiprocessing

    fork = threads is not None or _can_fork()
    context = multiprocessing.get_context("fork" if fork else "spawn")
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                                  initargs=(workers, quiet, threads))


def _stop_pool(pool) -> None:
    """Stop the workers now: SIGTERM ends a task cleanly; a worker still alive after
    STOP_GRACE_S is killed, because a SIGTERM that the kernel hands to one of its torch
    threads does not wake a main thread waiting for the next task."""
    processes = list(getattr(pool, "_processes", {}).values())
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(STOP_GRACE_S)
        if process.is_alive():
            process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


STOP_GRACE_S = 5.0


_worker_reporter: Reporter | None = None
_in_task = False


def _start_worker(workers: int, quiet: bool, threads: int | None) -> None:
    """Ctrl-C is the main process's to handle: it stops the workers with SIGTERM, which ends
    a task cleanly (its temporary file removed) and an idle worker at once. ``threads``: the
    coding threads of a worker forked with the codec loaded."""
    global _workers, _worker_reporter
    _workers, _worker_reporter = workers, Reporter(quiet)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_worker)
    if threads is not None:
        _import_torch().set_num_threads(threads)


def _stop_worker(signum: int, frame: object) -> None:
    if _in_task:
        raise Terminated()
    os._exit(EXIT_TERMINATED)


def _work(task: Task, job: Job) -> tuple[str | None, str | None]:
    """In a worker: (the message of an error that stops the run, the job's error line)."""
    global _in_task
    _in_task = True
    try:
        return None, _attempt(task, job, _worker_reporter)
    except Fatal as exc:
        return str(exc), None
    except Terminated:
        return "terminated", None
    finally:
        _in_task = False


def _attempt(task: Task, job: Job, reporter: Reporter) -> str | None:
    """Run ``task`` on one job; its error line, or None. A Fatal error propagates."""
    try:
        if job.error:
            raise BgcodecError(job.error)
        task(job, reporter)
    except Fatal:
        raise
    except Exception as exc:
        return describe_failure(exc, job.name)
    return None
