"""``bgcodec eval`` and ``bgcodec bound``: measuring the codec, against the classic codecs
and against the rate–distortion bound."""

from __future__ import annotations

import json
import os

import click

from ..errors import BgcodecError, one_line
from ..eval.codecs import CLASSIC_CODECS
from ..files import write_atomically
from .common import (EXIT_FAILED, EXIT_OK, PROG, ProgressBar, Reporter, comma_list, device_option, lambda_list,
                     run_ends_cleanly, weights_option)

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



@click.command(epilog=BOUND_EPILOG, short_help="The rate-distortion bound on a folder, next to the codec.")
@click.argument("bound_weights", type=click.Path(exists=True, dir_okay=False), metavar="BOUND_WEIGHTS")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False), metavar="DIR")
@weights_option("The codec's weights (default: the shipped ones).")
@click.option("--lambdas", metavar="L1,L2,...", default=None, callback=lambda_list,
              help="Lambdas (CompressAI convention), comma-separated.  Default: 8 values log-spaced over "
              "the codec's range.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N", help="Only the first N images.")
@click.option("--no-codec", is_flag=True, help="Only the bound (skip the codec's real curve).")
@click.option("-o", "--out", metavar="DIR", default=None, help="Also write bound.md, bound.json and rd_bound.png here.")
@click.pass_context
def bound(ctx, bound_weights, dataset, weights, lambdas, limit, no_codec, out):
    """Estimate the rate-distortion bound of the images in DIR with a bound model, next to
    the codec's real rate-distortion curve, and the gap between them in dB."""
    from ..eval.run import dataset_name, default_lambdas
    from ..imageio import find_images, load_image
    from ..eval.plots import write_bound_plot
    from ..train.curves import bound_curve, bound_table, codec_curve
    from ..config import cli_lambda_range
    from ..weights import load_bound_model, load_model

    try:
        teacher = load_bound_model(bound_weights)
        codec = None if no_codec else load_model(weights)
        images = [load_image(p, drop_alpha=True)[0] for p in find_images([dataset], limit)]
        values = lambdas or default_lambdas(codec.lambda_range if codec else cli_lambda_range(teacher.cfg))
        with ProgressBar("bound model") as bar:
            bound_rows = bound_curve(teacher, images, values, progress=bar)
        codec_rows = None
        if not no_codec:
            with ProgressBar("codec") as bar:
                codec_rows = codec_curve(codec.model, images, values, progress=bar)
    except (BgcodecError, ValueError) as exc:
        Reporter(quiet=False).error(one_line(exc))
        ctx.exit(EXIT_FAILED)
    table = bound_table(bound_rows, codec_rows)
    click.echo(table)
    if out:
        os.makedirs(out, exist_ok=True)
        title = f"{dataset_name(dataset)} ({len(images)} images): bound {os.path.basename(bound_weights)}"
        write_atomically(os.path.join(out, "bound.md"), f"# {title}\n\n{table}\n")
        write_atomically(os.path.join(out, "bound.json"), json.dumps(
            {"bound_weights": bound_weights, "codec_weights": None if no_codec else weights, "images": len(images),
             "bound": bound_rows, "codec": codec_rows}, indent=1))
        if not write_bound_plot(os.path.join(out, "rd_bound.png"), bound_rows, codec_rows, title):
            click.echo(f"{PROG}: note: rd_bound.png skipped: matplotlib is not installed", err=True)


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
A full Kodak run (24 images, 8 lambdas, all six classic codecs) codes
1,800 files and takes minutes; use --limit and --codecs for a quick look.
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


@click.command(name="eval", epilog=EVAL_EPILOG, short_help="Rate-distortion evaluation against classic codecs.")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False), metavar="DATASET_DIR")
@click.option("--lambdas", metavar="L1,L2,...", default=None, callback=lambda_list,
              help="bgcodec lambdas (CompressAI convention), comma-separated.  Default: 8 values "
              "log-spaced across the loaded weights' lambda range.")
@click.option("--codecs", metavar="NAME,...", default=",".join(CLASSIC_CODECS), show_default=True,
              help="Classic codecs to compare with (bgcodec always runs); 'none' for bgcodec alone.")
@weights_option("Model weights (.safetensors or random:CONFIG[:SEED]); default: the shipped default.")
@device_option()
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
    names = list(dict.fromkeys(_codec_names(ctx, codecs)))
    from ..eval.report import output_names
    from ..eval.run import EvalOptions, dataset_name, run

    if out is None:
        out = "eval-" + dataset_name(dataset)
    if not force:
        existing = [name for name in output_names(names) if os.path.lexists(os.path.join(out, name))]
        if existing:
            raise click.UsageError(f"{out} already holds {', '.join(existing)} (use --force to overwrite).", ctx)

    reporter = Reporter(quiet)
    options = EvalOptions(dataset=dataset, out=out, lambdas=lambdas, codecs=names, weights=weights,
                          device=device.lower(), limit=limit, bd_method=bd_method, anchors=anchors,
                          command=_eval_command_line(ctx))
    with run_ends_cleanly(ctx, reporter, BgcodecError), ProgressBar("Evaluating", reporter, shown=not quiet,
                                                                     show_eta=True) as bar:
        results = run(options, progress=bar, note=lambda message: reporter.note("eval", message))
    failed = results["errors"]
    for name in ("summary.md", "results.json"):
        click.echo(os.path.join(out, name))
    reporter.summary(f"evaluated {len(results['dataset']['images'])} image(s) x "
                     f"{sum(len(v) for v in results['means'].values())} settings in {results['wall_s']:.0f} s"
                     + (f"; {len(failed)} point(s) failed" if failed else ""))
    ctx.exit(EXIT_FAILED if failed else EXIT_OK)


def _codec_names(ctx: click.Context, codecs: str) -> list[str]:
    """--codecs as names of CLASSIC_CODECS; 'none' is bgcodec alone."""
    names = comma_list(codecs)
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in CLASSIC_CODECS]
    if unknown:
        raise click.BadParameter(f"unknown codec(s) {', '.join(unknown)} (choose from {', '.join(CLASSIC_CODECS)}, "
                                 "or 'none')", ctx, param_hint="--codecs")
    return names
