"""Fused GPU kernels written in Triton, driven by :mod:`.backend`.

``AVAILABLE`` says whether Triton can run them here; ``UNAVAILABLE`` says why not.  This
module never imports triton itself (``import optimlab`` must not pay for it): the version
is read from the installed package's metadata, and :mod:`.backend` imports triton when a
CUDA tensor first reaches it.

``INTERPRET`` is ``TRITON_INTERPRET=1`` as it was when this package was imported: Triton's
interpreter then runs the kernels on CPU tensors (slowly), which is how the test suite
checks them on machines without a GPU.  Triton reads the variable when it compiles a
``@triton.jit`` function, so it must be set before :mod:`.backend` is imported.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os

__all__ = ["AVAILABLE", "INTERPRET", "MIN_VERSION", "UNAVAILABLE", "unusable"]

# tuples as values of jit functions, tl.fdiv(ieee_rounding=...), sqrt_rn, fp64 annotations
MIN_VERSION = (3, 2)
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _why_not() -> str:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'optimlab[gpu]')"
    try:
        version = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:  # a source build without metadata
        return ""
    numbers = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    if numbers < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        return f"triton {version} is too old for optimlab's kernels (>= {wanted} needed)"
    return ""


UNAVAILABLE = _why_not()
AVAILABLE = not UNAVAILABLE


def unusable(reason: str) -> str:
    """Record that triton turned out not to load (``backend`` calls it); return ``reason``."""
    global AVAILABLE, UNAVAILABLE
    AVAILABLE, UNAVAILABLE = False, reason
    return reason
