"""``bgcodec encode``, ``decode`` and ``info``: the codec on the command line."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import click

from ..config import EFFORT_ITERATIONS, TILE_SIZE
from ..container import SYNTHESIS_KINDS, tile_boxes
from ..errors import BgcodecError, describe_failure, one_line
from ..imageio import DEFAULT_MAX_PIXELS
from ..lambdas import DEFAULT_QUALITY
from ..resources import DECODE_BYTES_PER_PIXEL, EFFORT_BYTES_PER_PIXEL, ENCODE_BYTES_PER_PIXEL, IMAGE_BYTES_PER_PIXEL
from .batch import CodecHolder, Job, check_device, check_output, plan, read_input, run_batch, write_output
from .common import EXIT_FAILED, EXIT_OK, STDIO, ProgressBar, Reporter, device_option, weights_option

MEMORY_HELP = (
    f"Memory: images larger than {TILE_SIZE}x{TILE_SIZE} are coded in tiles of that size; encoding takes about "
    f"{ENCODE_BYTES_PER_PIXEL} MiB per megapixel of a tile ({EFFORT_BYTES_PER_PIXEL} with --effort > 0), "
    f"decoding {DECODE_BYTES_PER_PIXEL} MiB, plus {IMAGE_BYTES_PER_PIXEL} MiB per megapixel of the image and about "
    "0.3 GiB for the program."
)

ENCODE_EPILOG = """\b
Examples:
  bgcodec encode img.png -l 0.01 -o img.bgv
  bgcodec encode img.png -q 90            # writes img.bgv next to img.png
  bgcodec encode photos/*.png -q 80 -o out/
  cat img.png | bgcodec encode - -l 0.01 -o - > img.bgv
  bgcodec encode img.png -q 80 --synthesis shallow -e 2   # fast decoding, SGA encoding
  bgcodec encode photos/*.png --target-size 30000 -o out/  # each file at most 30 000 bytes

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


def output_options(ext: str, what: str):
    """-o/--output, -f/--force and --quiet, shared by encode and decode."""

    def decorate(f):
        f = click.option("-v", "--verbose", is_flag=True, help="Also print each file's coding time.")(f)
        f = click.option("-j", "--jobs", "jobs_count", type=click.IntRange(min=1), default=None, metavar="N",
                         help="Use N cores: several inputs go to N processes that share the model loaded once "
                         "and run one thread each; a single input runs N threads, and the tiles of a large one go to N "
                         "processes (default: as many as the cores that other work leaves idle).")(f)
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


coding_weights_option = weights_option(
    "Model weights (.safetensors) to use instead of the shipped default. decode must use the weights the file "
    "was encoded with.")

max_pixels_option = click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_PIXELS,
    show_default=True,
    metavar="N",
    help="Refuse images with more than N pixels (checked from the header, before any decoding), and those "
    "that need more memory than is available.  " + MEMORY_HELP,
)


@click.command(epilog=ENCODE_EPILOG, short_help="Compress images to .bgv.")
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
    help="Quality, mapped log-linearly onto the weights' lambda range: 1 = the smallest file, 100 = the "
    "best quality these weights reach (not lossless).  "
    f"Default: {DEFAULT_QUALITY:g} when no -l or --target-* is given.",
)
@click.option("--target-size", type=click.IntRange(min=1), metavar="BYTES",
              help="Search lambda for the largest file of at most BYTES (within 1 %, as cwebp -size does).")
@click.option("--target-bpp", type=click.FloatRange(min=0, min_open=True), metavar="BPP",
              help="Search lambda for the largest file of at most BPP bits per pixel.")
@click.option("--target-psnr", type=click.FloatRange(min=0, min_open=True), metavar="DB",
              help="Search lambda for the smallest file whose decoded image reaches DB dB PSNR.")
@output_options(".bgv", "file")
@coding_weights_option
@device_option()
@click.option("--strip", is_flag=True, help="Leave out the colour profile, EXIF and XMP (default: keep them).")
@click.option(
    "--drop-alpha",
    is_flag=True,
    help="Discard the alpha channel / transparency of inputs that have one (default: keep it, losslessly).",
)
@click.option(
    "--synthesis",
    type=click.Choice(SYNTHESIS_KINDS),
    default=SYNTHESIS_KINDS[0],
    show_default=True,
    help="Decoder to target and record in the file: the full synthesis, or the shallow one "
    "(faster decoding, some quality lost; any decoder can still pick either).",
)
@click.option(
    "-e",
    "--effort",
    type=click.IntRange(min(EFFORT_ITERATIONS), max(EFFORT_ITERATIONS)),
    default=0,
    show_default=True,
    help="Encoder effort: 0 = one pass; "
    + ", ".join(f"{level}" for level in list(EFFORT_ITERATIONS)[1:]) + " = "
    + ", ".join(f"{n}" for n in list(EFFORT_ITERATIONS.values())[1:])
    + " iterations of SGA latent optimisation for the chosen synthesis, which keeps a result only if it lowers "
    "the rate-distortion cost: smaller files at equal quality, at the price of much slower encoding (see "
    "docs/BENCHMARKS.md); the decoder is unchanged.",
)
@max_pixels_option
@click.pass_context
def encode(ctx, inputs, output, lmbda, quality, target_size, target_bpp, target_psnr, device, weights, force, quiet,
           verbose, jobs_count, strip, drop_alpha, synthesis, effort, max_pixels):
    """Compress images (PNG, JPEG, WebP, TIFF, ... or '-' for stdin) to .bgv files.

    Grayscale images stay gray and an alpha channel is kept losslessly; palette,
    CMYK and 16-bit images are converted to 8 bits (with a note); EXIF
    orientation is applied (and the stored orientation reset to 1); the colour
    profile, EXIF and XMP are kept unless --strip. Images so small that storing
    their pixels losslessly takes fewer bytes are stored so.
    """
    target = _target(ctx, lmbda, quality, target_size, target_bpp, target_psnr)
    jobs = plan(ctx, inputs, output, ".bgv")
    check_device(ctx, device)
    lmbda = None if target else _lambda_for(ctx, lmbda, DEFAULT_QUALITY if quality is None else quality, weights)
    task = _Encode(CodecHolder(weights, device.lower()), lmbda, target, synthesis, effort, strip, drop_alpha,
                   max_pixels, force, verbose)
    run_batch(ctx, jobs, task, Reporter(quiet), "encoded", "Encoding", jobs_count)


@dataclass(frozen=True)
class _Encode:
    """What encode does with one input (picklable, for worker processes)."""

    holder: CodecHolder
    lmbda: float | None
    target: object
    synthesis: str
    effort: int
    strip: bool
    drop_alpha: bool
    max_pixels: int
    force: bool
    verbose: bool

    def __call__(self, job: Job, reporter: Reporter) -> None:
        from ..imageio import load_image, read_metadata
        from ..resources import encoding_bytes_per_pixel

        check_output(job, self.force)
        data = read_input(job)
        image, notes = load_image(data, drop_alpha=self.drop_alpha, keep_planes=True, max_pixels=self.max_pixels,
                                  memory_per_pixel=encoding_bytes_per_pixel(self.effort), name=job.name)
        for note in notes:
            reporter.note(job.name, note)
        options = {"synthesis": self.synthesis, "effort": self.effort,
                   "metadata": {} if self.strip else read_metadata(data),
                   "tile_runner": self.holder.tile_runner(len(tile_boxes(*image.shape[:2], TILE_SIZE)))}
        started = time.perf_counter()
        try:
            bits, chosen = _encode_one(self.holder.get(), image, self.lmbda, self.target, options, reporter, job.name)
        except BgcodecError as exc:
            message = one_line(exc)
            if not message.startswith(job.name + ":"):
                message = f"{job.name}: {message}"
            raise BgcodecError(message) from None
        seconds = time.perf_counter() - started
        write_output(job, lambda f: f.write(bits), self.force)
        height, width = image.shape[:2]
        reporter.info(f"{job.name} -> {job.dest_name}: {width}x{height}, lambda {chosen:.4g}, {len(bits):,} bytes, "
                      f"{8 * len(bits) / (width * height):.3f} bpp" + (f", {seconds:.2f} s" if self.verbose else ""))



def _lambda_for(ctx: click.Context, lmbda: float | None, quality: float, weights: str | None) -> float:
    """The λ to code with, checked against the weights' range before any model is built
    (a value outside it is a usage error)."""
    from ..config import lambda_range
    from ..lambdas import check_in_range, quality_to_lambda

    try:
        cli_range = lambda_range(weights)
    except BgcodecError as exc:  # unusable weights stop the run as when the model loads
        Reporter(quiet=False).error(one_line(exc))
        ctx.exit(EXIT_FAILED)
    if lmbda is None:
        return quality_to_lambda(quality, cli_range)
    try:
        check_in_range(lmbda, cli_range)
    except BgcodecError as exc:
        raise click.BadParameter(one_line(exc), ctx, param_hint="-l/--lambda") from None
    return lmbda


def _target(ctx: click.Context, lmbda: float | None, quality: float | None, size: int | None, bpp: float | None,
            psnr: float | None):
    """The --target-* given, or None; at most one way of choosing λ is a usage rule."""
    from ..targets import Target

    given = {"-l/--lambda": lmbda, "-q/--quality": quality, "--target-size": size, "--target-bpp": bpp,
             "--target-psnr": psnr}
    chosen = [name for name, value in given.items() if value is not None]
    if len(chosen) > 1:
        raise click.UsageError(f"{' and '.join(chosen)} are mutually exclusive.", ctx)
    for kind, value in (("size", size), ("bpp", bpp), ("psnr", psnr)):
        if value is not None:
            return Target(kind, float(value))
    return None


def _encode_one(codec, image, lmbda: float | None, target, options: dict, reporter: Reporter,
                name: str) -> tuple[bytes, float]:
    """The file's bytes and its λ: at the given λ, or the λ that a search for ``target`` chose."""
    if target is None:
        return _encode_with_progress(codec, image, lmbda, options, reporter, name), lmbda
    from ..targets import encode_to_target

    hit = encode_to_target(codec, image, target, **options)
    if not hit.met:
        unit = {"size": "bytes", "bpp": "bpp", "psnr": "dB"}[target.kind]
        reporter.note(name, f"the {target.kind} target of {target.value:g} {unit} is out of reach of these weights; "
                            f"wrote the closest file, at lambda {hit.lmbda:.4g}")
    return hit.data, hit.lmbda


def _encode_with_progress(codec, image, lmbda: float, options: dict, reporter: Reporter, name: str) -> bytes:
    """Codec.encode, with a progress bar of the SGA iterations or the tiles when they are shown."""
    tiled = len(tile_boxes(*image.shape[:2], TILE_SIZE)) > 1
    if not (options["effort"] or tiled) or not reporter.shows_bars():
        return codec.encode(image, lmbda, **options)
    with ProgressBar(f"{name}: SGA" if options["effort"] else name) as bar:
        return codec.encode(image, lmbda, progress=bar, **options)


@click.command(epilog=DECODE_EPILOG, short_help="Decompress .bgv files to images.")
@click.argument("inputs", nargs=-1, required=True, metavar="IN...")
@output_options(".png", "image (format from its extension)")
@coding_weights_option
@device_option()
@click.option(
    "--synthesis",
    type=click.Choice(("file", *SYNTHESIS_KINDS)),
    default="file",
    show_default=True,
    help="Decoder: the one recorded in each file, or force the full or the shallow synthesis.",
)
@max_pixels_option
@click.pass_context
def decode(ctx, inputs, output, device, weights, force, quiet, verbose, jobs_count, synthesis, max_pixels):
    """Decompress .bgv files ('-' for stdin) to PNG or another image format."""
    jobs = plan(ctx, inputs, output, ".png")
    check_device(ctx, device)
    task = _Decode(CodecHolder(weights, device.lower()), None if synthesis == "file" else synthesis, max_pixels, force,
                   verbose)
    run_batch(ctx, jobs, task, Reporter(quiet), "decoded", "Decoding", jobs_count)


@dataclass(frozen=True)
class _Decode:
    """What decode does with one input (picklable, for worker processes)."""

    holder: CodecHolder
    synthesis: str | None
    max_pixels: int
    force: bool
    verbose: bool

    def __call__(self, job: Job, reporter: Reporter) -> None:
        from .. import container
        from ..imageio import METADATA, format_for, save_image

        fmt = format_for(job.dest)  # an unknown extension fails before any work
        check_output(job, self.force)
        data = read_input(job)
        header, _ = container.unpack(data, job.name)  # a foreign or corrupt file fails before the model loads
        tile_runner = self.holder.tile_runner(len(header.tiles or ()))
        started = time.perf_counter()
        with ProgressBar(job.name, reporter, shown=header.tiles is not None and reporter.shows_bars()) as bar:
            image = self.holder.get().decode(data, job.name, self.max_pixels, self.synthesis, progress=bar,
                                             tile_runner=tile_runner)
        seconds = time.perf_counter() - started
        metadata = {field: getattr(header, field) for field in METADATA if getattr(header, field) is not None}
        write_output(job, lambda f: save_image(image, f, format=fmt, metadata=metadata), self.force)
        height, width = image.shape[:2]
        reporter.info(f"{job.name} -> {job.dest_name}: {width}x{height}" + (f", {seconds:.2f} s" if self.verbose else ""))



@click.command(epilog=INFO_EPILOG, short_help="Show the header of .bgv files.")
@click.argument("files", nargs=-1, required=True, metavar="FILE.bgv...")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of aligned text.")
@click.pass_context
def info(ctx, files, as_json):
    """Show what is inside .bgv files ('-' for stdin): size, lambda, streams, bpp.

    Reads only the container; does not load the model.
    """
    from .. import container

    results: list[dict] = []
    failed = 0
    reporter = Reporter(quiet=False)
    for source in files:
        job = Job(source, "<stdin>" if source == STDIO else source, None)
        try:
            data = read_input(job)
            header, streams = container.unpack(data, job.name)
            details = container.format_info(header, streams, len(data))
            results.append({"file": job.name, **details})
        except Exception as exc:
            failed += 1
            reporter.error(describe_failure(exc, job.name))

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
