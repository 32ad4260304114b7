"""Errors whose message is shown to the user as one line (no traceback)."""


class BgcodecError(Exception):
    """Base class: the message is complete and user-facing."""


class FormatError(BgcodecError):
    """A .bgv file is corrupt, truncated, foreign or from another model."""


class ImageError(BgcodecError):
    """An input image cannot be read or is not supported."""


class WeightsError(BgcodecError):
    """A weights file is missing, unreadable or does not fit the model."""


def one_line(text: object) -> str:
    """``text`` as a single line: every run of whitespace, newlines included, becomes one space."""
    return " ".join(str(text).split())
