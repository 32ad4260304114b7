"""What this machine and its libraries are, for benchmark, evaluation and training reports,
and the kernel configurations that make torch compute as another computer would.

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


def versions() -> dict[str, Any]:
    """Versions of Python, bgcodec and the libraries behind the codecs and plots."""
    from importlib.metadata import version

    from bgcodec import __version__

    out: dict[str, Any] = {"python": platform.python_version(), "bgcodec": __version__}
    for module in ("torch", "numpy", "PIL", "imagecodecs", "matplotlib"):
        out["Pillow" if module == "PIL" else module] = module_version(module)
    out.update(_pillow_library_versions())
    out.update(_imagecodecs_library_versions())
    try:
        out["click"] = version("click")
    except Exception:
        pass
    return out


def _pillow_library_versions() -> dict[str, str | None]:
    from PIL import features

    out: dict[str, str | None] = {}
    for key, feature in (("libjpeg", "jpg"), ("libwebp", "webp"), ("libavif", "avif")):
        try:
            out[key] = features.version(feature)
        except Exception:
            out[key] = None
    try:
        out["libjpeg_turbo"] = features.version_feature("libjpeg_turbo")
    except Exception:
        pass
    return out


def _imagecodecs_library_versions() -> dict[str, str | None]:
    try:
        import imagecodecs
    except ImportError:
        return {}
    return {"libjxl": library_version(imagecodecs, "jpegxl_version"),
            "openjpeg": library_version(imagecodecs, "jpeg2k_version")}


def machine(device: Any) -> dict[str, Any]:
    """The machine (:func:`bgcodec.system.machine_info`), the device bgcodec ran on and its GPU."""
    info = {**machine_info(), "device": str(device)}
    if getattr(device, "type", None) == "cuda":
        import torch

        info["gpu"] = torch.cuda.get_device_name(device)
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


KERNEL_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "OMP_NUM_THREADS")
"""Environment variables that make torch take another computer's CPU code paths."""

KERNEL_CONFIGURATIONS: dict[str, dict[str, str]] = {
    "native": {},
    "aten-default": {"ATEN_CPU_CAPABILITY": "default"},
    "aten-avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "onednn-sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "mkl-sse42": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "all-three": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
                  "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "threads-1": {"OMP_NUM_THREADS": "1"},
    "threads-2": {"OMP_NUM_THREADS": "2"},
}
"""Named sets of those variables, for the portability test and benchmark: a process started
with one computes as a CPU without AVX2 (ATen), without AVX (oneDNN, MKL), or with another
thread count would."""


def kernel_environment(configuration: str) -> dict[str, str]:
    """This process's environment with the kernel variables set as ``configuration`` names."""
    env = {k: v for k, v in os.environ.items() if k not in KERNEL_VARIABLES}
    env.update(KERNEL_CONFIGURATIONS[configuration])
    return env
