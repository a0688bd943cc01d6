"""Fused CPU kernels: C + OpenMP (``optim.c``), driven by :mod:`.backend`.

``AVAILABLE`` says whether the extension was built; ``UNAVAILABLE`` says why not.
"""

from __future__ import annotations

# torch first: the extension links libgomp.so.1, and with torch's copy already mapped
# the loader reuses it, so kernels and torch share one OpenMP runtime and thread pool.
import torch  # noqa: F401

try:
    from . import _optim
except ImportError as error:  # a pure-Python install: no compiler, or OPTIMLAB_NO_EXTENSION
    _optim = None
    UNAVAILABLE = f"the C extension optimlab.kernels.cpu._optim is not built ({error})"
else:
    from .. import CALL_FLAGS, HYPER_FIELDS, ROW_FIELDS

    # the contract (kernels/__init__.py) and the build must agree: a stale build is refused
    if (
        _optim.ROW_FIELDS != ROW_FIELDS
        or _optim.HYPER_FIELDS != HYPER_FIELDS
        or any(_optim.FLAGS.get(name) != 1 << bit for bit, name in enumerate(CALL_FLAGS))
    ):  # pragma: no cover
        _optim = None
        UNAVAILABLE = "the C extension was built from other sources (reinstall optimlab)"
    else:
        UNAVAILABLE = ""

AVAILABLE = _optim is not None

__all__ = ["AVAILABLE", "UNAVAILABLE", "warn_unavailable"]

_warned = False


def warn_unavailable() -> None:
    """Say once per process that the optimizers run unfused, and why."""
    global _warned
    if not _warned:
        _warned = True
        import warnings

        warnings.warn(
            f"optimlab: {UNAVAILABLE}; the optimizers use the reference (pure torch) path",
            RuntimeWarning,
            stacklevel=4,
        )
