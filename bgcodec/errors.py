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


def describe_failure(exc: BaseException, name: str | None = None) -> str:
    """One line for a failure: our own errors' message as it is; for anything else its type
    and message, after ``NAME: internal error:`` when the failed input's name is given.

    >>> describe_failure(FormatError("x.bgv: truncated file"))
    'x.bgv: truncated file'
    >>> describe_failure(KeyError("k"), "x.png")
    "x.png: internal error: KeyError: 'k'"
    """
    if isinstance(exc, BgcodecError):
        return one_line(exc)
    prefix = f"{name}: internal error: " if name else ""
    return f"{prefix}{type(exc).__name__}: {one_line(exc)}"
