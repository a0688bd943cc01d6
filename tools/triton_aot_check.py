"""Compile every Triton kernel variant for sm_90 without a GPU: catches what only a real
compile rejects (the interpreter that runs the suite's Triton tests accepts, for example, a
non-constexpr global read inside a kernel; this found one).

prepare (with and without rounding streams) and step, for each optimizer x slot set x storage
(dtype, state format, unsigned 8-bit slots, param rounding) x a few option sets.

    python tools/triton_aot_check.py [optimizer ...] [--quick]

About 30 s per optimizer with --quick on 2 cores, all of them about 8 minutes: run it after
any change to kernels/triton/.  It reads the backend's internals on purpose (it must build
every launch the backend can make), so it is a developer's tool, not part of the suite.
"""

import sys
import time

import torch
import triton
from triton.backends.compiler import GPUTarget

from optimlab.kernels import plan as plans
from optimlab.kernels.triton import backend, driver, updates

target = GPUTarget("cuda", 90, 32)
opts = {"enable_fp_fusion": False, "num_warps": 4}
VARIANTS = {"sgd": (0, 1), "adagrad": (1,), "rmsprop": (1, 3, 5, 7), "adam": (3, 7), "nadam": (3,)}
UNSIGNED = {"sgd": 0, "adagrad": 1, "rmsprop": 1, "adam": 6, "nadam": 2}  # NONNEGATIVE slots
FLAGSETS = [0, 0b1111111, 0b0010011, 0b0101110]
quick = "--quick" in sys.argv
only = [a for a in sys.argv[1:] if not a.startswith("--")]
F32, BF16, F16 = (plans.DTYPES[d] for d in (torch.float32, torch.bfloat16, torch.float16))
# (dtype code, state format, param rounding): every storage storage.py allows, and float64
STORAGES = [(code, 0, 0) for code in backend.TYPES] + [
    (F32, 2, 0),
    (F32, 3, 0),
    (BF16, 0, 1),
    (BF16, 0, 2),
    (BF16, 1, 0),
    (BF16, 3, 1),
    (BF16, 2, 2),
    (F16, 1, 0),
    (F16, 3, 0),
    (BF16, 2, 1),
    (BF16, 3, 2),
]
t0 = time.time()
n = 0


def compile_(fn, sig, const):
    global n
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=const)
    kernel = triton.compile(src, target=target, options=opts)
    n += 1
    return kernel


for name, (update, schedule, counters) in updates.OPTIMIZERS.items():
    if only and name not in only:
        continue
    for flags in FLAGSETS[:2] if quick else FLAGSETS:
        for streams in (False, True):
            for extra in ({"found_inf": None, "lr_ptr": None, "wd_ptr": None}, {}):
                sig = {
                    "table": "*i64",
                    "nrows": "i32",
                    "scalars": "*fp64",
                    "streams": "*i32",
                    "fresh": "*i32",
                    "fresh_now": "*i32",
                    "found_inf": "*fp32",
                    "lr_ptr": "*fp32",
                    "wd_ptr": "*fp64",
                    **{h: "fp64" for h in backend.HYPER_FIELDS},
                    "seed": "i32",
                    "step_lo": "i32",
                    "step_hi": "i32",
                    **{
                        c: "constexpr" for c in ("SCHEDULE", "COUNTERS", "FLAGS", "STREAMS", "ROWS")
                    },
                }
                const = {
                    "SCHEDULE": schedule,
                    "COUNTERS": counters,
                    "FLAGS": flags,
                    "STREAMS": streams,
                    "ROWS": driver.ROWS,
                }
                for k_, v in extra.items():
                    sig[k_] = "constexpr"
                    const[k_] = v
                compile_(driver.prepare, sig, const)
        for V in VARIANTS[name]:
            for code, state, rounding in STORAGES:
                flags_row = (
                    code << plans.DTYPE_SHIFT
                    | state << plans.STATE_SHIFT
                    | UNSIGNED[name] << plans.UNSIGNED_SHIFT
                    | rounding << plans.ROUNDING_SHIFT
                )
                launch = backend._Launch(flags_row >> plans.DTYPE_SHIFT, None, None)
                for extra in ({"found_inf": None, "grad_scale": None}, {}):
                    sig = {
                        "table": "*i64",
                        "chunks": "*i64",
                        "scalars": "*fp64",
                        "streams": "*i32",
                        "fresh_now": "*i32",
                        "found_inf": "*fp32",
                        "grad_scale": "*fp32",
                    }
                    const = dict(
                        UPDATE=update,
                        FLAGS=flags,
                        V=V,
                        **launch.constants(),
                        ALIGNED=bool(flags & 1),
                        CHUNK=driver.CHUNK,
                        BLOCK=driver.BLOCK,
                    )
                    sig.update({c: "constexpr" for c in const})
                    for k_, v in extra.items():
                        sig[k_] = "constexpr"
                        const[k_] = v
                    try:
                        compile_(driver.step, sig, const)
                    except Exception as error:
                        print(
                            "FAILED",
                            name,
                            V,
                            (code, state, rounding),
                            extra,
                            repr(error)[:2000],
                            flush=True,
                        )
                        raise
    print(name, "ok", n, f"{time.time() - t0:.0f}s", flush=True)
