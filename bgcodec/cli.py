"""The ``bgcodec`` command line: ``encode``, ``decode``, ``info``, ``eval`` and ``train``.

torch is imported only by the commands that run the model (``bgcodec.codec``
is imported inside them), so ``bgcodec --help`` and ``bgcodec info`` start
fast.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from dataclasses import dataclass
from typing import Callable

import click

from bgcodec import __version__
from bgcodec.errors import BgcodecError, one_line
from bgcodec.imageio import DEFAULT_MAX_PIXELS
from bgcodec.lambdas import SAMPLINGS, VALIDATION_LAMBDAS

PROG = "bgcodec"
STDIO = "-"

EXIT_OK = 0
EXIT_FAILED = 1  # some inputs failed
EXIT_USAGE = 2  # click's own code for usage errors
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)
EXIT_TERMINATED = 143  # SIGTERM

MAIN_EPILOG = """\b
Examples:
  bgcodec encode img.png -l 0.01 -o img.bgv
  bgcodec decode img.bgv -o img.png
  bgcodec info img.bgv

\b
Exit status:
  0    every input was processed
  1    at least one input failed (each failure is one
       'bgcodec: error: ...' line on stderr; the others
       were still processed)
  2    usage error (unknown option, bad value, ...)
  130  interrupted by Ctrl-C, 143 by SIGTERM (no partial
       output file is left behind)
"""

ENCODE_EPILOG = """\b
Examples:
  bgcodec encode img.png -l 0.01 -o img.bgv
  bgcodec encode img.png -q 90            # writes img.bgv next to img.png
  bgcodec encode photos/*.png -q 80 -o out/
  cat img.png | bgcodec encode - -l 0.01 -o - > img.bgv
  bgcodec encode img.png -q 80 --synthesis shallow -e 2   # fast decoding, SGA encoding

\b
Quality 1..100 maps log-linearly onto the lambda range the weights were
trained for (1 = smallest file, 100 = best quality).  Lambda follows the
CompressAI convention: loss = bpp + lambda * 255^2 * MSE.

\b
Without --force an existing output is never overwritten; outputs are
written to a temporary file and renamed into place, so a failed or
interrupted run leaves no partial file.
"""

DECODE_EPILOG = """\b
Examples:
  bgcodec decode img.bgv                  # writes img.png next to img.bgv
  bgcodec decode img.bgv -o img.webp      # format from the extension
  bgcodec decode out/*.bgv -o decoded/
  bgcodec decode img.bgv -o - | display -
  bgcodec decode img.bgv --synthesis shallow   # the fast decoder, for any file

\b
Output formats by extension: .png (default), .bmp, .tif/.tiff,
.webp (lossless), .ppm/.pnm, .jpg/.jpeg (quality 95, 4:4:4), .tga, .qoi,
.jp2/.j2k, .avif (quality 95).  -o - writes PNG to stdout.
"""

INFO_EPILOG = """\b
Examples:
  bgcodec info img.bgv
  bgcodec info --json *.bgv | jq '.[].bpp'

\b
--json prints one object for one file and a list of objects for several
(a list even when some of them fail); failures go to stderr.
"""


# --------------------------------------------------------------------------
# messages


def _failure_message(name: str, exc: BaseException) -> str:
    """One line for an input that failed: our errors' message as it is; for anything else the
    input's name, "internal error", the exception's type and its message."""
    if isinstance(exc, BgcodecError):
        return one_line(exc)
    return f"{name}: internal error: {type(exc).__name__}: {one_line(exc)}"


class _Fatal(Exception):
    """Stops the whole run (e.g. the model cannot be loaded)."""


class _Terminated(BaseException):
    """Raised by the SIGTERM handler so that temporary files are cleaned up."""


class Reporter:
    """Writes notes, errors and statistics to stderr, one line each."""

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


# --------------------------------------------------------------------------
# planning outputs and writing them safely


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


def _plan(ctx: click.Context, inputs: tuple[str, ...], output: str | None, ext: str) -> list[Job]:
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


def _read_input(job: Job) -> bytes:
    if job.source == STDIO:
        return click.get_binary_stream("stdin").read()
    try:
        with open(job.source, "rb") as f:
            return f.read()
    except OSError as exc:
        raise BgcodecError(f"{job.name}: cannot read ({exc.strerror or one_line(exc)})") from None


def _check_not_exists(job: Job, force: bool) -> None:
    if job.dest is not None and not force and os.path.lexists(job.dest):
        raise BgcodecError(f"{job.dest} exists (use --force to overwrite)")


def _write_output(job: Job, write: Callable, force: bool) -> None:
    """Write via ``write(binary_file)`` to the job's destination, atomically.

    Files are written to a temporary file in the destination's directory and
    then linked (no clobbering, atomically) or, with ``force``, renamed into
    place; the temporary file is removed whatever happens.
    """
    if job.dest is None:
        _write_stdout(write)
        return
    dest = job.dest
    directory = os.path.dirname(dest) or "."
    try:
        if job.make_parent:
            os.makedirs(directory, exist_ok=True)
        tmp, fd = _create_temp(directory, os.path.basename(dest))
    except OSError as exc:
        raise BgcodecError(f"{dest}: cannot write ({exc.strerror or one_line(exc)})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        if force:
            os.replace(tmp, dest)
        else:
            _link_no_clobber(tmp, dest)
    except FileExistsError:
        raise BgcodecError(f"{dest} exists (use --force to overwrite)") from None
    except OSError as exc:
        raise BgcodecError(f"{dest}: cannot write ({exc.strerror or one_line(exc)})") from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _create_temp(directory: str, base: str) -> tuple[str, int]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o666)  # mode subject to the umask, like any new file
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file in {directory}")


def _link_no_clobber(tmp: str, dest: str) -> None:
    """Move ``tmp`` to ``dest`` unless ``dest`` exists (raises FileExistsError), atomically."""
    try:
        os.link(tmp, dest)
        return
    except FileExistsError:
        raise
    except OSError:
        pass  # no hard links on this file system: reserve the name, then replace it
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    os.close(fd)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(dest)
        raise


def _write_stdout(write: Callable) -> None:
    import io

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


# --------------------------------------------------------------------------
# running a batch


class _CodecHolder:
    """Loads the codec on first use, once for all inputs."""

    def __init__(self, weights: str | None, device: str) -> None:
        self.weights = weights
        self.device = device
        self._codec = None

    def get(self):
        if self._codec is None:
            # Coding uses torch's whole thread pool; OpenMP workers that busy-wait collapse when
            # other jobs share the cores (parallel batches), passive ones do not
            # (docs/BENCHMARKS.md). Read when torch is first imported, just below.
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            try:
                from bgcodec.codec import Codec

                self._codec = Codec.load(self.weights, device=self.device)
            except BgcodecError as exc:
                raise _Fatal(one_line(exc)) from None
            except Exception as exc:
                raise _Fatal(f"cannot load the model: {type(exc).__name__}: {one_line(exc)}") from None
        return self._codec


def _run_batch(
    ctx: click.Context,
    jobs: list[Job],
    process: Callable[[Job, Reporter], None],
    reporter: Reporter,
    verb: str,
    label: str,
) -> None:
    failed = 0

    def run_one(job: Job) -> None:
        nonlocal failed
        try:
            if job.error:
                raise BgcodecError(job.error)
            process(job, reporter)
        except _Fatal:
            raise
        except Exception as exc:
            failed += 1
            reporter.error(_failure_message(job.name, exc))

    show_bar = not reporter.quiet and len(jobs) > 1 and sys.stderr.isatty()
    try:
        if show_bar:
            with click.progressbar(
                jobs,
                label=label,
                file=sys.stderr,
                show_pos=True,
                item_show_func=lambda job: job.name if job is not None else None,
            ) as bar:
                reporter.bar_active = True
                try:
                    for job in bar:
                        run_one(job)
                finally:
                    reporter.bar_active = False
        else:
            for job in jobs:
                run_one(job)
    except _Fatal as exc:
        reporter.error(str(exc))
        ctx.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        reporter.error("interrupted")
        ctx.exit(EXIT_INTERRUPTED)
    except _Terminated:
        reporter.error("terminated")
        ctx.exit(EXIT_TERMINATED)

    if len(jobs) > 1:
        done = len(jobs) - failed
        tail = f" ({failed} failed)" if failed else ""
        reporter.summary(f"{verb} {done} of {len(jobs)} inputs{tail}")
    ctx.exit(EXIT_FAILED if failed else EXIT_OK)


# --------------------------------------------------------------------------
# commands


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=MAIN_EPILOG,
)
@click.version_option(__version__, "-V", "--version", prog_name=PROG, message="%(prog)s %(version)s")
def cli() -> None:
    """bgcodec: a learned image codec (BG-VAE).

    Compress images to .bgv files, decompress them, and inspect .bgv headers.
    Run 'bgcodec COMMAND --help' for each command's options.
    """


def _comma_list(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _lambda_list(ctx, param, value: str | None) -> list[float] | None:
    """Click callback: 'L1,L2,...' as sorted distinct positive λ values (None stays None)."""
    if value is None:
        return None
    try:
        values = [float(v) for v in _comma_list(value)]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
    if not values or any(not v > 0 for v in values):
        raise click.BadParameter("give one or more positive lambdas")
    return sorted(set(values))


def _model_options(f):
    f = click.option(
        "--weights",
        metavar="PATH",
        default=None,
        help="Model weights (.safetensors) to use instead of the shipped default. "
        "decode must use the weights the file was encoded with.",
    )(f)
    f = click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"], case_sensitive=False),
        default="auto",
        show_default=True,
        help="Where to run the model; auto uses CUDA when available.",
    )(f)
    return f


def _output_options(ext: str, what: str):
    """-o/--output, -f/--force and --quiet, shared by encode and decode."""

    def decorate(f):
        f = click.option("--quiet", is_flag=True, help="Print only errors (no notes, statistics, progress bar).")(f)
        f = click.option(
            "-f",
            "--force",
            is_flag=True,
            help="Overwrite existing output files (default: an existing output makes that input fail).",
        )(f)
        f = click.option(
            "-o",
            "--output",
            metavar="OUT|DIR/",
            default=None,
            help=f"Output {what}, or a directory (an existing one, or a path ending in '/', which "
            f"is created) to write DIR/<name>{ext} into; '-' writes to stdout.  A single file "
            f"name needs a single input.  Default: next to each input with the extension "
            f"replaced by {ext}, or stdout when the input is '-'.",
        )(f)
        return f

    return decorate


_max_pixels_option = click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    metavar="N",
    help="Refuse images with more than N pixels (checked from the header, before any decoding).",
)


@cli.command(epilog=ENCODE_EPILOG, short_help="Compress images to .bgv.")
@click.argument("inputs", nargs=-1, required=True, metavar="IN...")
@click.option(
    "-l",
    "--lambda",
    "lmbda",
    type=float,
    metavar="LAMBDA",
    help="Rate-distortion trade-off in the CompressAI convention (larger = better "
    "quality, bigger file).  Must lie in the range the weights were trained for; a "
    "value outside it is an error that states the range.  Excludes -q.",
)
@click.option(
    "-q",
    "--quality",
    type=click.FloatRange(1, 100),
    metavar="1..100",
    help="Quality, mapped onto the weights' lambda range (1 = smallest file, "
    "100 = best quality).  Default: 75 when -l is not given.",
)
@_output_options(".bgv", "file")
@_model_options
@click.option(
    "--drop-alpha",
    is_flag=True,
    help="Discard the alpha channel / transparency of inputs that have one "
    "(default: refuse such inputs).",
)
@click.option(
    "--synthesis",
    type=click.Choice(["full", "shallow"]),
    default="full",
    show_default=True,
    help="Decoder to target and record in the file: the full synthesis, or the shallow one "
    "(faster decoding, some quality lost; any decoder can still pick either).",
)
@click.option(
    "-e",
    "--effort",
    type=click.IntRange(0, 3),
    default=0,
    show_default=True,
    help="Encoder effort: 0 = one pass; 1, 2, 3 = 25, 100, 400 iterations of SGA latent "
    "optimisation for the chosen synthesis, which keeps a result only if it lowers the rate-distortion cost: "
    "smaller files at equal quality, at the price of much slower encoding (see docs/BENCHMARKS.md); "
    "the decoder is unchanged.  Effort > 0 needs about 2 GiB of memory per megapixel and takes images up to 4 MP.",
)
@_max_pixels_option
@click.pass_context
def encode(ctx, inputs, output, lmbda, quality, device, weights, force, quiet, drop_alpha, synthesis, effort,
           max_pixels):
    """Compress images (PNG, JPEG, WebP, TIFF, ... or '-' for stdin) to .bgv files.

    Grayscale, palette, CMYK and 16-bit images are converted to 8-bit RGB (with
    a note); EXIF orientation is applied; images with alpha are refused unless
    --drop-alpha.
    """
    if lmbda is not None and quality is not None:
        raise click.UsageError("-l/--lambda and -q/--quality are mutually exclusive.", ctx)
    if lmbda is None and quality is None:
        quality = 75.0
    jobs = _plan(ctx, inputs, output, ".bgv")
    holder = _CodecHolder(weights, device.lower())
    state: dict = {}

    def process(job: Job, reporter: Reporter) -> None:
        from bgcodec.imageio import load_image
        from bgcodec.lambdas import quality_to_lambda

        _check_not_exists(job, force)
        data = _read_input(job)
        image, notes = load_image(data, drop_alpha=drop_alpha, max_pixels=max_pixels, name=job.name)
        for note in notes:
            reporter.note(job.name, note)
        codec = holder.get()
        if "lmbda" not in state:
            state["lmbda"] = lmbda if lmbda is not None else quality_to_lambda(quality, codec.lambda_range)
        try:
            bits = _encode_with_progress(codec, image, state["lmbda"], synthesis, effort, reporter, job.name)
        except BgcodecError as exc:
            message = one_line(exc)
            if not message.startswith(job.name + ":"):
                message = f"{job.name}: {message}"
            raise BgcodecError(message) from None
        _write_output(job, lambda f: f.write(bits), force)
        height, width = image.shape[:2]
        reporter.info(
            f"{job.name} -> {job.dest_name}: {width}x{height}, lambda {state['lmbda']:.4g}, "
            f"{len(bits):,} bytes, {8 * len(bits) / (width * height):.3f} bpp"
        )

    _run_batch(ctx, jobs, process, Reporter(quiet), "encoded", "Encoding")


def _encode_with_progress(codec, image, lmbda: float, synthesis: str, effort: int, reporter: Reporter,
                          name: str) -> bytes:
    """Codec.encode, with a progress bar of the SGA iterations when they are shown."""
    if effort == 0 or reporter.quiet or reporter.bar_active or not sys.stderr.isatty():
        return codec.encode(image, lmbda, synthesis=synthesis, effort=effort)
    from bgcodec.sga import EFFORT_ITERATIONS

    with click.progressbar(length=EFFORT_ITERATIONS[effort], label=f"{name}: SGA", file=sys.stderr) as bar:
        done = [0]

        def progress(n: int, total: int) -> None:
            bar.update(n - done[0])
            done[0] = n

        return codec.encode(image, lmbda, synthesis=synthesis, effort=effort, progress=progress)


@cli.command(epilog=DECODE_EPILOG, short_help="Decompress .bgv files to images.")
@click.argument("inputs", nargs=-1, required=True, metavar="IN...")
@_output_options(".png", "image (format from its extension)")
@_model_options
@click.option(
    "--synthesis",
    type=click.Choice(["file", "full", "shallow"]),
    default="file",
    show_default=True,
    help="Decoder: the one recorded in each file, or force the full or the shallow synthesis.",
)
@_max_pixels_option
@click.pass_context
def decode(ctx, inputs, output, device, weights, force, quiet, synthesis, max_pixels):
    """Decompress .bgv files ('-' for stdin) to PNG or another image format."""
    from bgcodec.imageio import format_for, save_image

    jobs = _plan(ctx, inputs, output, ".png")
    holder = _CodecHolder(weights, device.lower())

    def process(job: Job, reporter: Reporter) -> None:
        fmt = format_for(job.dest)  # an unknown extension fails before any work
        _check_not_exists(job, force)
        data = _read_input(job)
        if not data:
            raise BgcodecError(f"{job.name}: empty file (not a .bgv file)")
        image = holder.get().decode(data, job.name, max_pixels, None if synthesis == "file" else synthesis)
        _write_output(job, lambda f: save_image(image, f, format=fmt), force)
        height, width = image.shape[:2]
        reporter.info(f"{job.name} -> {job.dest_name}: {width}x{height}")

    _run_batch(ctx, jobs, process, Reporter(quiet), "decoded", "Decoding")


@cli.command(epilog=INFO_EPILOG, short_help="Show the header of .bgv files.")
@click.argument("files", nargs=-1, required=True, metavar="FILE.bgv...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of aligned text.")
@click.pass_context
def info(ctx, files, as_json):
    """Show what is inside .bgv files ('-' for stdin): size, lambda, streams, bpp.

    Reads only the container; does not load the model.
    """
    from bgcodec import container

    results: list[dict] = []
    failed = 0
    reporter = Reporter(quiet=False)
    for source in files:
        job = Job(source, "<stdin>" if source == STDIO else source, None)
        try:
            data = _read_input(job)
            header, streams = container.unpack(data, job.name)
            details = container.format_info(header, streams, len(data))
            results.append({"file": job.name, **details})
        except Exception as exc:
            failed += 1
            reporter.error(_failure_message(job.name, exc))

    if as_json:
        if len(files) > 1:
            click.echo(json.dumps(results, indent=2, default=str))
        elif results:
            click.echo(json.dumps(results[0], indent=2, default=str))
    else:
        if results:
            click.echo("\n\n".join(_format_block(r) for r in results))
    ctx.exit(EXIT_FAILED if failed else EXIT_OK)


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_format_value(v) for v in value)
    return str(value)


def _format_block(result: dict) -> str:
    rows = [(key, _format_value(value)) for key, value in result.items() if key != "file"]
    width = max((len(key) for key, _ in rows), default=0) + 1
    lines = [f"{result['file']}:"]
    lines += [f"  {key + ':':<{width}} {value}" for key, value in rows]
    return "\n".join(lines)


TRAIN_EPILOG = """\b
Examples:
  bgcodec train photos/ -o runs/small --config small --steps 100000
  bgcodec train photos/ -o runs/small --resume          # continue after a stop
  bgcodec train photos/ -o runs/ft --init weights/bgvae-small.safetensors
  bgcodec train photos/ -o runs/wide --config paper --init weights/bgvae-small.safetensors
  bgcodec train photos/ -o runs/bound --bound           # the bound model (teacher)
  bgcodec train photos/ -o runs/guided --teacher runs/bound/ema.safetensors
  torchrun --nproc-per-node 4 -m bgcodec train photos/ -o runs/paper --config paper

\b
The run directory gets checkpoint.safetensors (for --resume), ema.safetensors
(the weights to use with --weights), log.csv and val.csv.  SIGINT/SIGTERM save a
checkpoint before exiting.
"""


@cli.command(epilog=TRAIN_EPILOG, short_help="Train a model on image folders.")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False), metavar="DIR...")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--config", default="small", show_default=True, type=click.Choice(["tiny", "small", "paper"]),
              help="Model size.")
@click.option("--steps", default=100_000, show_default=True, type=click.IntRange(min=1), help="Total steps.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1), help="Crops per step (per GPU).")
@click.option("--crop", default=128, show_default=True, type=click.IntRange(min=64), help="Crop size in pixels.")
@click.option("--lr", default=2e-4, show_default=True, type=float, help="Peak learning rate (Adam).")
@click.option("--warmup-steps", default=500, show_default=True, type=click.IntRange(min=1), help="Linear LR warm-up.")
@click.option("--ema-decay", default=0.999, show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="EMA decay of the exported weights.")
@click.option("--lambda-sampling", default="cube-root", show_default=True,
              type=click.Choice(SAMPLINGS),
              help="How λ is drawn per crop: uniform in λ^(1/3) (QARV's; favours high rates), "
                   "log-uniform (equal weight per octave; more steps at low rates) or log-middle "
                   "(log-uniform with 3/4 of the crops in the middle half of the octaves).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--downscale-jpeg", is_flag=True, help="Halve JPEG sources before cropping (removes JPEG artefacts).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: torch's).")
@click.option("--bf16", is_flag=True, help="bf16 autocast (CUDA).")
@click.option("--compile", "compile", is_flag=True,
              help="torch.compile the training step; the first step compiles for minutes (needs a C++ compiler on CPU). "
                   "What it gained is in docs/BENCHMARKS.md.")
@click.option("--resume", is_flag=True, help="Continue from the run directory's checkpoint.")
@click.option("--init", "init", metavar="WEIGHTS", default=None,
              help="Start from a weights file, with a fresh optimizer: tensors that match are copied, "
                   "those of a narrower config are grown into the wider layers (bgcodec.widening), "
                   "the rest are listed and start fresh.")
@click.option("--val-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Images for periodic validation with real bitstreams (the first --val-images).")
@click.option("--val-lambdas", metavar="L1,L2,...", default=",".join(map(str, VALIDATION_LAMBDAS)),
              show_default=True, callback=_lambda_list, help="Lambdas (CompressAI convention) of the periodic validation.")
@click.option("--val-every", default=2000, show_default=True, type=click.IntRange(min=1))
@click.option("--log-every", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--checkpoint-minutes", default=5.0, show_default=True, type=click.FloatRange(min=0.1))
@click.option("--shallow-only", is_flag=True,
              help="Train only the shallow synthesis, against the frozen model from --init (run it after "
              "the main training; the main training leaves the shallow synthesis untouched).")
@click.option("--bound", is_flag=True,
              help="Train the rate-distortion bound model (the teacher of --teacher) instead of the codec.")
@click.option("--teacher", metavar="BOUND_WEIGHTS", default=None,
              help="Guide the codec by this frozen bound model (feature affinities and reconstruction).")
@click.option("--feature-weight", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Weight of the feature-affinity guidance loss (with --teacher).")
@click.option("--reconstruction-weight", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Weight of the teacher-reconstruction loss (with --teacher).")
def train(data, out, **options):
    """Train BG-VAE (variable rate) on folders of PNG/JPEG images (recursive).

    Runs on CPU, one GPU, or several GPUs when started with torchrun.
    """
    from bgcodec.training import TrainOptions, train as run_training

    try:
        run_training(TrainOptions(data=list(data), out=out, **options), log=lambda line: click.echo(line, err=True))
    except BgcodecError as exc:
        raise click.ClickException(one_line(exc)) from None


BOUND_EPILOG = """\b
Examples:
  bgcodec bound runs/bound/ema.safetensors /data/kodak
  bgcodec bound runs/bound/ema.safetensors /data/kodak --limit 4 --no-codec
  bgcodec bound runs/bound/ema.safetensors /data/kodak -o docs/results/bound

\b
The bound model (bgcodec train --bound) has Gaussian latents and the KL as its
rate: no real coder reaches it, and it estimates an upper bound of the
information rate-distortion function of the images.  Its bpp is the KL in bits
per pixel and its PSNR that of its reconstruction from one posterior sample.
The codec's curve comes from real .bgv files at the same lambdas.  With --out
the table goes to bound.md, the numbers to bound.json and the plot
(matplotlib) to rd_bound.png.
"""


@cli.command(epilog=BOUND_EPILOG, short_help="The rate-distortion bound on a folder, next to the codec.")
@click.argument("bound_weights", type=click.Path(exists=True, dir_okay=False), metavar="BOUND_WEIGHTS")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False), metavar="DIR")
@click.option("--weights", metavar="PATH", default=None, help="The codec's weights (default: the shipped ones).")
@click.option("--lambdas", metavar="L1,L2,...", default=None, callback=_lambda_list,
              help="Lambdas (CompressAI convention), comma-separated.  Default: 8 values log-spaced over "
              "the codec's range.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N", help="Only the first N images.")
@click.option("--no-codec", is_flag=True, help="Only the bound (skip the codec's real curve).")
@click.option("-o", "--out", metavar="DIR", default=None, help="Also write bound.md, bound.json and rd_bound.png here.")
def bound(bound_weights, dataset, weights, lambdas, limit, no_codec, out):
    """Estimate the rate-distortion bound of the images in DIR with a bound model, next to
    the codec's real rate-distortion curve, and the gap between them in dB."""
    from bgcodec.curves import bound_curve, bound_table, codec_curve, plot_bound
    from bgcodec.evaluation import dataset_name, default_lambdas, list_images
    from bgcodec.imageio import load_image
    from bgcodec.weights import cli_lambda_range, load_bound_model, load_model

    try:
        teacher = load_bound_model(bound_weights)
        codec = None if no_codec else load_model(weights)
        images = [load_image(str(p), drop_alpha=True)[0] for p in list_images(dataset, limit)]
        values = lambdas or default_lambdas(codec.lambda_range if codec else cli_lambda_range(teacher.cfg))
        with click.progressbar(length=len(images) * len(values) * (1 if no_codec else 2), label="measuring",
                               file=sys.stderr) as bar:
            bound_rows = bound_curve(teacher, images, values, progress=lambda: bar.update(1))
            codec_rows = None if no_codec else codec_curve(codec.model, images, values,
                                                           progress=lambda: bar.update(1))
    except (BgcodecError, ValueError) as exc:
        raise click.ClickException(one_line(exc)) from None
    table = bound_table(bound_rows, codec_rows)
    click.echo(table)
    if out:
        os.makedirs(out, exist_ok=True)
        title = f"{dataset_name(dataset)} ({len(images)} images): bound {os.path.basename(bound_weights)}"
        with open(os.path.join(out, "bound.md"), "w") as f:
            f.write(f"# {title}\n\n{table}\n")
        with open(os.path.join(out, "bound.json"), "w") as f:
            json.dump({"bound_weights": bound_weights, "codec_weights": None if no_codec else weights,
                       "images": len(images), "bound": bound_rows, "codec": codec_rows}, f, indent=1)
        if not plot_bound(bound_rows, codec_rows, os.path.join(out, "rd_bound.png"), title):
            click.echo("bgcodec: note: rd_bound.png skipped: matplotlib is not installed", err=True)


EVAL_CODECS = ("jpeg", "jpeg444", "webp", "avif", "jxl", "jpeg2000")  # = bgcodec.classic_codecs.CLASSIC_CODECS

EVAL_EPILOG = """\b
Examples:
  bgcodec eval /data/kodak                          # -> eval-kodak/
  bgcodec eval /data/kodak --limit 4 --codecs jpeg,webp --out /tmp/quick
  bgcodec eval /data/kodak --weights runs/small/ema.safetensors \\
      --anchors anchors/compressai_kodak --bd-method cubic

\b
Every point is a real file: bgcodec runs Codec.encode -> .bgv bytes ->
Codec.decode, exactly like 'bgcodec encode' / 'bgcodec decode', and the
classic codecs write and read their own formats; bpp counts the whole file.
The classic codecs are swept over settings that cover about 0.1-2 bpp:
  jpeg, jpeg444  Pillow JPEG 4:2:0 / 4:4:4, quality 5..90
  webp           Pillow WebP, quality 0..90, method 6
  avif           Pillow AVIF 4:4:4, speed 6, tune=psnr, quality 5..85
  jxl            imagecodecs JPEG XL, effort 7, distance 0.5..20
  jpeg2000       imagecodecs JPEG 2000 (OpenJPEG), PSNR target 24..44 dB
jxl and jpeg2000 need imagecodecs, the plots matplotlib
(pip install 'bgcodec[eval]'); what is missing is skipped with a note.

\b
Outputs in --out: results.json (everything), <codec>.csv (one row per
image and setting), summary.md (mean table, BD-rate / BD-PSNR table) and
rd_psnr.png, rd_msssim.png.  Existing outputs are kept unless --force.

\b
Time: a full Kodak run (24 images, 8 lambdas, all six classic codecs,
1,800 encode/decode pairs) takes minutes: 6.6 minutes on a 2-core CPU
with the default (small) weights, about half of it computing MS-SSIM.
Use --limit and --codecs for a quick look.
"""


def _eval_command_line(ctx: click.Context) -> list[str]:
    """The eval command line as parsed (options that differ from their defaults), for results.json."""
    words = [PROG, "eval", ctx.params["dataset"]]
    for param in ctx.command.params:
        if isinstance(param, click.Option) and ctx.params.get(param.name) not in (None, False, param.default):
            words.append(max(param.opts, key=len))
            if not param.is_flag:
                words.append(str(ctx.params[param.name]))
    return words


@cli.command(name="eval", epilog=EVAL_EPILOG, short_help="Rate-distortion evaluation against classic codecs.")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False), metavar="DATASET_DIR")
@click.option("--lambdas", metavar="L1,L2,...", default=None, callback=_lambda_list,
              help="bgcodec lambdas (CompressAI convention), comma-separated.  Default: 8 values "
              "log-spaced across the loaded weights' lambda range.")
@click.option("--codecs", metavar="NAME,...", default=",".join(EVAL_CODECS), show_default=True,
              help="Classic codecs to compare with (bgcodec always runs); 'none' for bgcodec alone.")
@click.option("--weights", metavar="PATH", default=None,
              help="Model weights (.safetensors or random:CONFIG[:SEED]); default: the shipped default.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"], case_sensitive=False), default="auto",
              show_default=True, help="Where to run the model; auto uses CUDA when available.")
@click.option("-o", "--out", metavar="DIR", default=None,
              help="Output folder (created).  Default: eval-<dataset folder name>/ in the current directory.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Use only the first N images (sorted by file name).")
@click.option("--bd-method", type=click.Choice(["pchip", "cubic"]), default="pchip", show_default=True,
              help="Bjøntegaard interpolation: piecewise cubic (PCHIP) or the classic cubic polynomial fit.")
@click.option("--anchors", type=click.Path(exists=True, file_okay=False), metavar="DIR", default=None,
              help="Overlay published curves from DIR/*.json ({name, results: {bpp, psnr-rgb, ...}}) on the "
              "plots (plots only).")
@click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs in --out.")
@click.option("--quiet", is_flag=True, help="No progress bar and no notes (errors and the final lines only).")
@click.pass_context
def eval_command(ctx, dataset, lambdas, codecs, weights, device, out, limit, bd_method, anchors, force, quiet):
    """Measure bpp, PSNR and MS-SSIM of bgcodec and the classic codecs on the
    images in DATASET_DIR, with Bjøntegaard deltas and RD plots.
    """
    names = _comma_list(codecs)
    if names == ["none"]:
        names = []
    unknown = [n for n in names if n not in EVAL_CODECS]
    if unknown:
        raise click.BadParameter(f"unknown codec(s) {', '.join(unknown)} (choose from {', '.join(EVAL_CODECS)}, "
                                 "or 'none')", ctx, param_hint="--codecs")
    names = list(dict.fromkeys(names))
    from bgcodec.evaluation import EvalOptions, dataset_name, output_names, run

    if out is None:
        out = "eval-" + dataset_name(dataset)
    if not force:
        existing = [name for name in output_names(names) if os.path.lexists(os.path.join(out, name))]
        if existing:
            raise click.UsageError(f"{out} already holds {', '.join(existing)} (use --force to overwrite).", ctx)

    reporter = Reporter(quiet)
    bar_holder: dict = {}

    def progress(step: int, label: str) -> None:
        if quiet:
            return
        bar = bar_holder.get("bar")
        if bar is None:
            bar = bar_holder["bar"] = click.progressbar(
                length=step, label="Evaluating", file=sys.stderr, show_pos=True, show_eta=True,
                item_show_func=lambda item: item)
            bar.__enter__()
            reporter.bar_active = sys.stderr.isatty()
            return
        bar.update(step, label)

    def close_bar() -> None:
        bar = bar_holder.pop("bar", None)
        if bar is not None:
            reporter.bar_active = False
            bar.__exit__(None, None, None)

    options = EvalOptions(dataset=dataset, out=out, lambdas=lambdas, codecs=names, weights=weights,
                          device=device.lower(), limit=limit, bd_method=bd_method, anchors=anchors,
                          command=_eval_command_line(ctx))
    try:
        results = run(options, progress=progress, note=lambda message: reporter.note("eval", message))
    except BgcodecError as exc:
        close_bar()
        reporter.error(one_line(exc))
        ctx.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        close_bar()
        reporter.error("interrupted")
        ctx.exit(EXIT_INTERRUPTED)
    except _Terminated:
        close_bar()
        reporter.error("terminated")
        ctx.exit(EXIT_TERMINATED)
    close_bar()
    failed = [e for e in results["errors"]]
    for name in ("summary.md", "results.json"):
        click.echo(os.path.join(out, name))
    reporter.summary(f"evaluated {len(results['dataset']['images'])} image(s) x "
                     f"{sum(len(v) for v in results['means'].values())} settings in {results['wall_s']:.0f} s"
                     + (f"; {len(failed)} point(s) failed" if failed else ""))
    ctx.exit(EXIT_FAILED if failed else EXIT_OK)


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    import signal

    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGTERM
        pass
    cli.main(args=argv, prog_name=PROG)


if __name__ == "__main__":
    main()
