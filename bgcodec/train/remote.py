"""Training on a machine lent for a few minutes (a GPU): one command unpacks an archive made by
``bgcodec.train.pack``, trains for the given minutes (``bgcodec train --minutes``) and leaves
in the output folder what the lender sends back: the EMA weights as float16 (a file under
16 MiB for ``small``; ``--init`` it on any machine to continue) and the run's log.csv and
val.csv. Options after ``--`` go to ``bgcodec train`` as they are.

    python -m bgcodec.train.remote data.tar --minutes 8 --out "$OUT" -- \\
        --init weights/bgvae-small.safetensors --device cuda --batch-size 32 --crop 256
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

EXPORTED = "ema-f16.safetensors"


def unpack(archive: str | Path, folder: Path) -> tuple[Path, Path | None]:
    """Extract ``archive`` below ``folder``; returns the folders to train and to validate on."""
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder / "images", folder / "val" if (folder / "val").is_dir() else None


def export_half(ema: Path, path: Path) -> None:
    """Save the float32 EMA weights ``ema`` as float16, keeping their metadata."""
    from ..model import BGVAE
    from ..weights import build_from_file, save_model

    model, _, metadata = build_from_file(str(ema), BGVAE)
    save_model(model, path, {"config_name": metadata["config_name"], "training": metadata["training"]}, half=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bgcodec.train.remote", description=__doc__.split("\n\n")[0],
                                     epilog="Options after -- go to bgcodec train.")
    parser.add_argument("archive", help="a tar file made by python -m bgcodec.train.pack")
    parser.add_argument("--minutes", type=float, required=True, help="training time (data loading not counted)")
    parser.add_argument("--out", required=True, type=Path, help="where the weights and logs go")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args, options = parser.parse_args(argv[:split]), argv[split + 1:]

    from ..cli.train import train as train_command

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data, val = unpack(args.archive, Path(tmp))
        if val is not None and "--val-dir" not in options:
            options += ["--val-dir", str(val)]
        run = Path(tmp) / "run"
        status = train_command.main([str(data), "-o", str(run), "--minutes", str(args.minutes), *options],
                                    standalone_mode=False)
        if status:
            sys.exit(status)
        export_half(run / "ema.safetensors", args.out / EXPORTED)
        for name in ("log.csv", "val.csv"):
            if (run / name).exists():
                shutil.copy(run / name, args.out / name)
    print(f"{args.out / EXPORTED}: {(args.out / EXPORTED).stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
