"""The classic image codecs that ``bgcodec eval`` compares with, behind one interface.

JPEG (4:2:0 and 4:4:4), WebP and AVIF through Pillow; JPEG XL and JPEG 2000 through the
optional ``imagecodecs`` package (``pip install 'bgcodec[eval]'``). Each codec knows the
settings it is swept over; ``prepare`` raises :class:`CodecUnavailable` when it cannot run
here.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np

from bgcodec.errors import one_line
from bgcodec.eval.system import library_version, module_version


class CodecUnavailable(Exception):
    """The codec cannot run here; the message says why (shown as a note)."""


class EvalCodec:
    """One codec with the settings it is swept over."""

    name: str = ""
    title: str = ""
    param: str = ""
    values: Sequence[float] = ()
    larger_is_better: bool = True
    """Whether a larger setting value means more bits and a higher quality."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def prepare(self) -> None:
        """Raise CodecUnavailable when the codec cannot run here."""

    def warm_up(self, image: np.ndarray) -> None:
        """An untimed run before the first timed point, for codecs whose first call is slow."""

    def label(self, value: float) -> str:
        return f"{self.param}={value:g}"

    def encode(self, image: np.ndarray, value: float) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"title": self.title, "param": self.param, "values": list(self.values), "notes": list(self.notes)}

    def _round_trip_probe(self) -> None:
        """One tiny round trip, so that a broken codec fails in ``prepare`` and not at every point."""
        self.decode(self.encode(np.zeros((16, 16, 3), np.uint8), self.values[len(self.values) // 2]))


# --------------------------------------------------------------------------
# Pillow


class PillowCodec(EvalCodec):
    fmt = ""
    feature = ""
    options: dict[str, Any] = {}

    def prepare(self) -> None:
        from PIL import Image, features

        Image.init()
        if self.fmt not in Image.SAVE or (self.feature and not features.check(self.feature)):
            raise CodecUnavailable(f"this Pillow build cannot write {self.fmt}")
        self._round_trip_probe()

    def encode(self, image: np.ndarray, value: float) -> bytes:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=self.fmt, **self.options, quality=int(value))
        return buffer.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return np.asarray(img.convert("RGB") if img.mode != "RGB" else img, dtype=np.uint8)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["library"] = f"Pillow {module_version('PIL')}" + self._library_suffix()
        info["options"] = dict(self.options)
        return info

    def _library_suffix(self) -> str:
        """', <library> <version>' of the library behind this Pillow plugin ('' if none)."""
        from PIL import features

        if not self.feature:
            return ""
        if self.feature == "jpg" and features.check_feature("libjpeg_turbo"):
            return f", libjpeg-turbo {features.version_feature('libjpeg_turbo')}"
        library = {"jpg": "libjpeg", "webp": "libwebp", "avif": "libavif"}.get(self.feature, self.feature)
        return f", {library} {features.version(self.feature)}"


class JpegCodec(PillowCodec):
    name, title, param = "jpeg", "JPEG 4:2:0", "q"
    fmt, feature = "JPEG", "jpg"
    options = {"subsampling": 2, "optimize": True}
    values = (5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90)


class Jpeg444Codec(JpegCodec):
    name, title = "jpeg444", "JPEG 4:4:4"
    options = {"subsampling": 0, "optimize": True}


class WebpCodec(PillowCodec):
    name, title, param = "webp", "WebP", "q"
    fmt, feature = "WEBP", "webp"
    options = {"method": 6}
    values = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90)


class AvifCodec(PillowCodec):
    name, title, param = "avif", "AVIF 4:4:4", "q"
    fmt, feature = "AVIF", "avif"
    options = {"subsampling": "4:4:4", "speed": 6, "advanced": {"tune": "psnr"}}
    values = (5, 10, 20, 30, 40, 50, 60, 70, 80, 85)

    def prepare(self) -> None:
        self.options = dict(type(self).options)  # this instance's own: the fallback below edits it
        try:
            super().prepare()
        except CodecUnavailable:
            raise
        except Exception as exc:  # e.g. an encoder without the codec-specific option 'tune'
            del self.options["advanced"]
            super().prepare()
            self.notes.append(f"this libavif encoder refused tune=psnr ({one_line(exc)}); default tuning used")
        else:
            self.notes.append("Pillow's AVIF plugin has no tuning option of its own; tune=psnr is passed "
                              "to the encoder as a codec-specific option (advanced={'tune': 'psnr'})")

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        try:
            from PIL import _avif

            info["encoder"] = [c for c in ("aom", "rav1e", "svt") if _avif.encoder_codec_available(c)]
        except Exception:
            pass
        return info


# --------------------------------------------------------------------------
# imagecodecs


class ImagecodecsCodec(EvalCodec):
    codec_class = ""
    """imagecodecs' class for the format, whose ``available`` says whether this build has it."""
    format_title = ""
    version_function = ""

    def prepare(self) -> None:
        try:
            import imagecodecs
        except ImportError:
            raise CodecUnavailable("needs the imagecodecs package (pip install 'bgcodec[eval]')") from None
        if not getattr(getattr(imagecodecs, self.codec_class, None), "available", False):
            raise CodecUnavailable(f"this imagecodecs build has no {self.format_title} codec")
        self._imagecodecs = imagecodecs
        self._round_trip_probe()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        library = library_version(getattr(self, "_imagecodecs", None), self.version_function)
        info["library"] = f"imagecodecs {module_version('imagecodecs')}, {library}"
        return info


class JxlCodec(ImagecodecsCodec):
    name, title, param = "jxl", "JPEG XL (effort 7)", "d"
    codec_class, format_title, version_function = "JPEGXL", "JPEG XL", "jpegxl_version"
    larger_is_better = False
    values = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 9.0, 14.0, 20.0)

    def encode(self, image: np.ndarray, value: float) -> bytes:
        return bytes(self._imagecodecs.jpegxl_encode(image, effort=7, distance=float(value)))

    def decode(self, data: bytes) -> np.ndarray:
        return np.asarray(self._imagecodecs.jpegxl_decode(data), dtype=np.uint8)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["options"] = {"effort": 7, "distance": "d (Butteraugli distance; smaller = better)"}
        return info


class Jpeg2000Codec(ImagecodecsCodec):
    name, title, param = "jpeg2000", "JPEG 2000 (OpenJPEG)", "psnr"
    codec_class, format_title, version_function = "JPEG2K", "JPEG 2000", "jpeg2k_version"
    values = (24, 26, 28, 30, 32, 34, 36, 38, 40, 42, 44)

    def prepare(self) -> None:
        super().prepare()
        self.notes.append("the setting is OpenJPEG's fixed-quality target (imagecodecs level = target PSNR "
                          "in dB, one quality layer); imagecodecs defaults otherwise")

    def encode(self, image: np.ndarray, value: float) -> bytes:
        return bytes(self._imagecodecs.jpeg2k_encode(image, level=int(value)))

    def decode(self, data: bytes) -> np.ndarray:
        return np.asarray(self._imagecodecs.jpeg2k_decode(data), dtype=np.uint8)


CODEC_CLASSES: dict[str, type[EvalCodec]] = {
    c.name: c for c in (JpegCodec, Jpeg444Codec, WebpCodec, AvifCodec, JxlCodec, Jpeg2000Codec)
}
CLASSIC_CODECS = tuple(CODEC_CLASSES)
"""The names ``bgcodec eval --codecs`` takes."""
BGCODEC = "bgcodec"
"""The name bgcodec itself has in an evaluation's results."""
