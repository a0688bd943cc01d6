"""Test-only help for running the Triton kernels in Triton's interpreter.

Triton's interpreter re-patches ``triton.language`` into its NumPy implementation on every
call of a ``@triton.jit`` helper (``_patch_lang``, ~2 ms), although the patch is already in
place for the whole launch; the kernels call helpers dozens of times per program, so that
is about half of the test file's run time.  :func:`patch_once_per_launch` makes a helper
call skip the patch when the modules it uses were already patched in the same launch.
The same code runs either way; where the interpreter lacks these internals nothing is done.
"""

from __future__ import annotations

import inspect


def patch_once_per_launch() -> bool:
    """Install the shortcut (idempotent); False when this Triton has other internals."""
    try:
        import triton.language as tl
        from triton.runtime import interpreter
    except ImportError:
        return False
    executor = getattr(interpreter, "GridExecutor", None)
    patch = getattr(interpreter, "_patch_lang", None)
    if executor is None or patch is None:
        return False
    if getattr(patch, "once_per_launch", False):
        return True
    patched: set[int] = set()  # the language modules patched in the running launch

    class Kept:  # what a skipped patch returns: nothing to restore
        def restore(self) -> None:
            pass

    def patch_lang(fn):
        langs = {
            id(value)
            for value in fn.__globals__.values()
            if inspect.ismodule(value) and value in (tl, tl.core)
        }
        if langs and langs <= patched:
            return Kept()
        patched.update(langs)
        return patch(fn)

    run = executor.__call__

    def call(self, *args, **kwargs):
        try:
            return run(self, *args, **kwargs)
        finally:
            patched.clear()  # the launch restores the language when it ends

    patch_lang.once_per_launch = True
    interpreter._patch_lang = patch_lang
    executor.__call__ = call
    return True
