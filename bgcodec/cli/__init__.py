"""The ``bgcodec`` command line: ``encode``, ``decode``, ``info``, ``eval``, ``bound`` and ``train``.

- ``common``: exit codes, the reporter, the progress bar, shared options.
- ``batch``: planning outputs, writing them safely, one error line per failed input.
- ``coding``: encode, decode, info.
- ``evaluate``: eval, bound.
- ``train``: train, with its options derived from TrainOptions.

torch is imported only by the commands that run the model, so ``bgcodec --help`` and
``bgcodec info`` start fast.
"""

from __future__ import annotations

import os
import sys

import click

from .. import __version__
from .coding import decode, encode, info
from .common import PROG, Terminated
from .evaluate import bound, eval_command
from .train import train

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


for command in (encode, decode, info, eval_command, bound, train):
    cli.add_command(command)


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point.

    Once torch is loaded, the process ends without Python's finalisation: tearing torch's
    modules down takes longer than coding a photo, and every output is complete and closed
    by the time the command returns.
    """
    import signal

    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGTERM
        pass
    try:
        cli.main(args=argv, prog_name=PROG)
    except SystemExit as exit_:
        if "torch" not in sys.modules:
            raise
        code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
        try:
            if isinstance(exit_.code, str):
                print(exit_.code, file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # a closed pipe: nothing more can be told
            pass
        os._exit(code)


if __name__ == "__main__":
    main()
