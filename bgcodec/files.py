"""Writing output files so that no failure or interruption leaves a partial one behind.

Every file bgcodec writes (coded images, decoded images, evaluation reports, checkpoints,
weights) is written to a temporary file in the destination's folder and then moved into
place in one step: renamed over an existing file when overwriting is allowed, otherwise
hard-linked, which fails if the destination exists, so nothing is ever clobbered.
Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from typing import BinaryIO, Union

from .errors import BgcodecError, one_line

Content = Union[bytes, str, Callable[[BinaryIO], None]]
"""What to write: bytes, text (written as UTF-8), or a function that writes to a binary file."""


class OutputExists(BgcodecError):
    """The destination exists and overwriting was not allowed."""


def write_atomically(dest: str | os.PathLike, content: Content, *, overwrite: bool = True,
                     make_parent: bool = False) -> None:
    """Write ``content`` to ``dest`` all at once or not at all.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
    >>> write_atomically(path, "hello")
    >>> write_atomically(path, "again", overwrite=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bgcodec.files.OutputExists: ... exists (use --force to overwrite)
    >>> path.read_text()
    'hello'
    """
    with atomic_path(dest, overwrite=overwrite, make_parent=make_parent) as tmp:
        with open(tmp, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, *, overwrite: bool = True, make_parent: bool = False) -> Iterator[str]:
    """A temporary path next to ``dest`` for the block to write; when the block succeeds it
    becomes ``dest``. The temporary file is removed whatever happens. Raises OutputExists,
    or BgcodecError naming ``dest`` when it cannot be written."""
    dest = os.fspath(dest)
    directory = os.path.dirname(dest) or "."
    try:
        if make_parent:
            os.makedirs(directory, exist_ok=True)
        tmp = _reserve_temporary(directory, os.path.basename(dest))
    except OSError as exc:
        raise _cannot_write(dest, exc) from None
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, dest)
        else:
            _link_no_clobber(tmp, dest)
    except FileExistsError:
        raise OutputExists(f"{dest} exists (use --force to overwrite)") from None
    except OSError as exc:
        raise _cannot_write(dest, exc) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _cannot_write(dest: str, exc: OSError) -> BgcodecError:
    return BgcodecError(f"{dest}: cannot write ({exc.strerror or one_line(exc)})")


def _reserve_temporary(directory: str, base: str) -> str:
    """Create an empty, new temporary file in ``directory`` and return its path."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, flags, 0o666))  # mode subject to the umask, like any new file
            return tmp
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
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(dest)
        raise
