"""Build optimlab's optional C extension (the fused CPU optimizer kernels).

Everything else is in pyproject.toml.  The extension needs only a C compiler and
Python's headers (no torch headers: kernels get raw pointers from ``data_ptr()``).
It is tried with OpenMP, then without; if neither compiles, the package installs
as pure Python and the optimizers run their reference path (and say so once).
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNEL_DIR = os.path.join("src", "optimlab", "kernels", "cpu")

# -fno-math-errno: without it sqrtf is a libm call and the loops do not vectorize (3x slower).
# -fno-trapping-math: lets conditionals on option flags become selects inside vector loops.
# -ffp-contract=off: only the fma()s the source writes are fused, so results match torch's
#   kernels bitwise on every instruction set (AVX-512, AVX2, baseline clones alike).
# No -march: the source picks AVX-512 / AVX2 clones at load time (target_clones).
# -g0: Python's own CFLAGS ask for debug info, which triples the library (~3 MB).
FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-std=gnu11", "-g0"]
OPENMP = ["-fopenmp"]


class OptionalBuildExt(build_ext):
    """Build the kernels if a compiler allows, with OpenMP if it can; never fail the install."""

    def build_extension(self, ext: Extension) -> None:
        if os.environ.get("OPTIMLAB_NO_EXTENSION"):
            self._skip(ext, "OPTIMLAB_NO_EXTENSION is set")
            return
        base_compile, base_link = list(ext.extra_compile_args), list(ext.extra_link_args)
        errors = []
        for extra in (OPENMP, []):
            ext.extra_compile_args = base_compile + extra
            ext.extra_link_args = base_link + extra
            try:
                super().build_extension(ext)
                if not extra:
                    self.warn("optimlab: built the kernels without OpenMP (one thread)")
                return
            except Exception as error:  # compiler missing, no OpenMP, ...
                errors.append(f"{' '.join(extra) or 'no OpenMP'}: {error}")
        self._skip(ext, "; ".join(errors))

    def _skip(self, ext: Extension, why: str) -> None:
        self.warn(
            f"optimlab: not building {ext.name} ({why}); the optimizers will use the "
            "reference (pure torch) path"
        )


extensions = []
if sys.platform != "win32":  # the flags are GCC/Clang's
    extensions.append(
        Extension(
            "optimlab.kernels.cpu._optim",
            sources=[os.path.join(KERNEL_DIR, name) for name in ("optim.c", "module.c")],
            depends=[os.path.join(KERNEL_DIR, name) for name in ("optim.h", "updates.h")],
            extra_compile_args=FLAGS,
        )
    )

setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
