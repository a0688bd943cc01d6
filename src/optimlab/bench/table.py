"""``optimlab bench``'s table: markdown, one row per optimizer and layout, notes below."""

from __future__ import annotations

from .cases import LAYOUTS, OPTIMIZERS, PEERS, TORCH_IMPLS
from .timing import BUSY_LOAD, LOADED_SPREAD


def render(meta: dict, rows: list[dict]) -> str:
    ran = {name for row in rows for name in row["seconds"]}
    others = [f"torch {name}" for name in TORCH_IMPLS] + [name for name in PEERS if name in ran]
    head = (
        f"optimlab bench: torch {meta['torch']}, {meta['device']}, kernels {meta['kernels']}; "
        f"load {meta['load']:.1f} at start; medians of {meta['rounds']} rounds "
        f"of {meta['repeats']} interleaved steps"
    )
    cols = ["optimizer", "layout", "optimlab ms", *others, "vs fastest other", "of bw limit",
            "add_ GB/s"]  # fmt: skip
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [row["optimizer"], row["layout"]]
        cells += [_ms(row["seconds"].get(name)) for name in ["optimlab", *others]]
        cells += [_speedup(row), _share(row), f"{row['bandwidth_gbs']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + notes(meta, rows))


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.2f}"


def _speedup(row: dict) -> str:
    if row["speedup_vs_best"] is None:
        return "—"
    low, high = row["speedup_range"]
    spread = f" ({low:.2f}–{high:.2f})" if high > low else ""
    return f"{row['speedup_vs_best']:.2f}x{spread}"


def _share(row: dict) -> str:
    why = untrusted(row)
    if why:
        return {"loaded": "— (loaded)", "over": "— (>100 %)"}[why]
    return "—" if row["share_of_limit"] is None else f"{100 * row['share_of_limit']:.0f} %"


def untrusted(row: dict) -> str | None:
    """Why a row's share of the bandwidth limit is not a measurement (None: it is)."""
    if row["share_of_limit"] is None:
        return None
    if row["bandwidth_spread"] > LOADED_SPREAD:
        return "loaded"
    return "over" if row["share_of_limit"] > 1 else None


def notes(meta: dict, rows: list[dict]) -> list[str]:
    layouts = dict.fromkeys(row["layout"] for row in rows)
    by_bytes: dict[float, list[str]] = {}
    for name in dict.fromkeys(row["optimizer"] for row in rows):
        by_bytes.setdefault(OPTIMIZERS[name].bytes_per_param, []).append(name)
    lines = [
        "Layouts: " + "; ".join(f"{name}: {LAYOUTS[name][0]}" for name in layouts) + ".",
        "vs fastest other: the fastest other implementation's time over optimlab's, median "
        "(min–max) over the rounds.",
        "Bandwidth limit: bytes per param ("
        + ", ".join(f"{'/'.join(names)} {size:.4g}" for size, names in by_bytes.items())
        + ") / the add_ bandwidth of that row (12 B per element).",
    ]
    why = [untrusted(row) for row in rows]
    if why.count("loaded"):
        lines.append(
            f"— (loaded), {why.count('loaded')} of {len(rows)} rows: the add_ bandwidth swung "
            f"more than {LOADED_SPREAD}x between rounds: other work took the memory bus "
            "meanwhile, so the share is not shown (the ratios still compare steps interleaved "
            "with each other)."
        )
    if why.count("over"):
        lines.append(
            f"— (>100 %), {why.count('over')} of {len(rows)} rows: optimlab's step moved its "
            "bytes faster than the add_ did, so the add_ was not the limit there: other work "
            "slowed it, or caches or more memory streams in flight served the step better; "
            "the share is not shown."
        )
    if meta["load"] > BUSY_LOAD:
        lines.append(
            f"The machine was busy when the run started (load average {meta['load']:.1f}, "
            f"{meta['cpus']} CPUs): every figure is less certain; rerun on a quiet machine."
        )
    missing: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        for name, why in row["missing"].items():
            missing.setdefault((name, why), []).append(f"{row['optimizer']} / {row['layout']}")
    for (name, why), where in missing.items():
        lines.append(f"{name} did not run ({', '.join(where)}): {why}.")
    allocated = [row["allocated_bytes_per_step"] for row in rows]
    if set(allocated) - {None}:
        lines.append(
            "Bytes allocated by one step after the first, optimlab: "
            + ", ".join(f"{size} B" for size in sorted(set(allocated) - {None}))
            + f" ({len(allocated) - allocated.count(None)} of {len(rows)} rows)."
        )
    return lines
