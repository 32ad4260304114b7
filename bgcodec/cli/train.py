"""``bgcodec train``: its options are TrainOptions' fields, with their help, choices and bounds."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from ..errors import BgcodecError, one_line
from ..train.options import TrainOptions, settings
from .common import EXIT_FAILED, Reporter, lambda_list

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



def _click_type(field: dataclasses.Field) -> Any:
    """The click type of a TrainOptions field, from its default and its metadata."""
    meta, default = field.metadata, field.default
    if "choices" in meta:
        return click.Choice(meta["choices"])
    if meta.get("path") == "dir":
        return click.Path(exists=True, file_okay=False)
    kind = {"int": int, "float": float}.get(str(field.type).split(" ")[0])
    if "min" in meta or "max" in meta:
        bounded = click.FloatRange if kind is float or isinstance(default, float) else click.IntRange
        return bounded(meta.get("min"), meta.get("max"), min_open=meta.get("min_open", False),
                       max_open=meta.get("max_open", False))
    return kind or (type(default) if default is not None and default is not dataclasses.MISSING else str)


def _option(field: dataclasses.Field):
    """The click option of one TrainOptions field."""
    name = "--" + field.name.replace("_", "-")
    meta = field.metadata
    default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
    if isinstance(default, bool):
        return click.option(name, field.name, is_flag=True, help=meta["help"])
    if isinstance(default, list):  # the validation lambdas
        return click.option(name, field.name, default=",".join(map(str, default)), show_default=True,
                            metavar=meta.get("metavar"), callback=lambda_list, help=meta["help"])
    return click.option(name, field.name, type=_click_type(field), default=default,
                        show_default=default is not None, metavar=meta.get("metavar"), help=meta["help"])


def _train_options(f):
    for field in reversed(settings()):
        f = _option(field)(f)
    return f


@click.command(epilog=TRAIN_EPILOG, short_help="Train a model on image folders.")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False), metavar="DIR...")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@_train_options
@click.pass_context
def train(ctx, data, out, **options):
    """Train BG-VAE (variable rate) on folders of images (recursive).

    Runs on CPU, one GPU, or several GPUs when started with torchrun.
    """
    from ..train.loop import train as run_training

    try:
        run_training(TrainOptions(data=list(data), out=out, **options), log=lambda line: click.echo(line, err=True))
    except BgcodecError as exc:
        Reporter(quiet=False).error(one_line(exc))
        ctx.exit(EXIT_FAILED)
