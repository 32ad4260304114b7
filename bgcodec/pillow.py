"""``.bgv`` in Pillow: importing this module registers the format, so that ``Image.open``
reads .bgv files and ``Image.save`` writes them.

``Image.open`` reads only the container (size and mode come from its header); the model
runs when the pixels are first needed (``load()``, ``convert()``, ...). ``save`` takes
``quality`` (1..100) or ``lmbda``, ``effort`` and ``synthesis``, as ``bgcodec encode`` does.
Both use the default weights, or those given to :func:`register`.

>>> import bgcodec.pillow
>>> from PIL import Image
>>> Image.registered_extensions()[".bgv"]
'BGV'
"""

from __future__ import annotations

import os
from typing import IO, Any

from PIL import Image, ImageFile

from . import _pil_info, container
from .lambdas import to_cli

FORMAT = "BGV"
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_SAVE_OPTIONS = ("lmbda", "quality", "effort", "synthesis")
_weights: str | os.PathLike | None = None


def register(weights: str | os.PathLike | None = None) -> None:
    """Register .bgv with Pillow (done on import); ``weights`` is the weights file Pillow
    decodes and encodes with (None: the default)."""
    global _weights
    _weights = weights
    Image.register_open(FORMAT, BgvImageFile, _accept)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, ".bgv")
    Image.register_decoder(FORMAT, _BgvDecoder)


def _accept(prefix: bytes) -> bool:
    return prefix[:3] == container.MAGIC


def _mode(header: container.Header) -> str:
    if header.pixels is not None:
        return _MODES[header.channels]
    return ("L" if header.gray else "RGB") + ("A" if header.alpha is not None else "")


class BgvImageFile(ImageFile.ImageFile):
    """A .bgv file opened by Pillow; its errors are bgcodec's one-line FormatErrors."""

    format = FORMAT
    format_description = "bgcodec learned image"

    def _open(self) -> None:
        name = str(getattr(self.fp, "name", "<bgv>"))
        data = self.fp.read()
        header, _ = container.unpack(data, name)
        self._size = (header.width, header.height)
        self._mode = _mode(header)
        self.info.update({"lambda": to_cli(header.lmbda), **_pil_info(header)})
        self.tile = [ImageFile._Tile(FORMAT, (0, 0, header.width, header.height), 0, (name,))]


class _BgvDecoder(ImageFile.PyDecoder):
    _pulls_fd = True

    def decode(self, buffer: bytes | Any) -> tuple[int, int]:
        from . import _codec

        planes = _codec(_weights).decode(self.fd.read(), self.args[0])
        self.set_as_raw(planes.tobytes(), _MODES[planes.shape[2]])
        return -1, 0


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    from . import compress

    options = {key: im.encoderinfo[key] for key in _SAVE_OPTIONS if key in im.encoderinfo}
    fp.write(compress(im, weights=_weights, **options))


register()
