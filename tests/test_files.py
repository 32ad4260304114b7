"""Atomic output files (bgcodec.files) and the runnable examples in the docstrings."""

import doctest
import importlib
import pkgutil

import pytest

import bgcodec
from bgcodec.errors import BgcodecError
from bgcodec.files import OutputExists, write_atomically


def listing(folder):
    return {p.name for p in folder.iterdir()}


def test_write_refuses_to_clobber_atomically_and_cleans_up(tmp_path):
    dest = tmp_path / "x.bgv"
    dest.write_bytes(b"old")
    with pytest.raises(OutputExists, match="exists"):
        write_atomically(dest, b"new", overwrite=False)
    assert dest.read_bytes() == b"old"
    assert listing(tmp_path) == {"x.bgv"}

    def interrupted(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path / "y.bgv", interrupted, overwrite=False)
    assert listing(tmp_path) == {"x.bgv"}

    write_atomically(dest, b"new")
    assert dest.read_bytes() == b"new"
    assert listing(tmp_path) == {"x.bgv"}


def test_write_into_a_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(BgcodecError, match="cannot write"):
        write_atomically(tmp_path / "missing" / "x.txt", "text")
    write_atomically(tmp_path / "made" / "x.txt", "text", make_parent=True)
    assert (tmp_path / "made" / "x.txt").read_text() == "text"


def _modules_with_examples():
    for info in pkgutil.walk_packages(bgcodec.__path__, "bgcodec."):
        if any(test.examples for test in doctest.DocTestFinder().find(importlib.import_module(info.name))):
            yield info.name


@pytest.mark.parametrize("name", sorted(_modules_with_examples()))
def test_docstring_examples_run(name):
    failures, tried = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0
