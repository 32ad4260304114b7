"""What this machine and its libraries are, for benchmark and evaluation reports.

Standard library only, so that any process can import it cheaply (the memory benchmark
measures its children's RSS and must stay small itself).
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info() -> dict[str, Any]:
    """Platform, CPU, core counts, memory and load; keys this platform cannot tell are left out."""
    info: dict[str, Any] = {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count()}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gib"] = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        info["load_average"] = list(os.getloadavg())
    except (OSError, AttributeError):
        pass
    return info


def module_version(module: str) -> str | None:
    """The ``__version__`` of a module (imported if need be); None if it cannot be imported."""
    try:
        mod = sys.modules.get(module) or __import__(module)
        return str(getattr(mod, "__version__", None) or "unknown")
    except Exception:
        return None


def library_version(module: Any, function: str) -> str | None:
    """``module.function()`` as a string (e.g. imagecodecs' ``jpegxl_version``); None if that fails."""
    try:
        return str(getattr(module, function)())
    except Exception:
        return None
