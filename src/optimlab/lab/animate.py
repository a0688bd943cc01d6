"""``--gif``: the optimizers' paths on a 2-D function, drawn step by step (matplotlib + Pillow)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter

from . import catalog, problems
from .analysis import Study
from .plots import color
from .plots2d import contour
from .store import Store

__all__ = ["trajectory_gif"]

FRAMES = 60


def trajectory_gif(study: Study, store: Store, problem: str) -> bytes | None:
    """An animated GIF of every optimizer's tuned seed-0 path on ``problem``, or None."""
    p = problems.get(problem)
    paths = []
    for g in study.of(problem):
        run = g.seed_runs.get(0)
        if g.schedule == "constant" and g.tuned and run is not None:
            traj = store.array(run.key, "trajectory")
            if traj is not None:
                paths.append((g.optimizer, traj))
    if not paths or not p.is_2d:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    contour(ax, p)
    lines = {}
    for name, _ in paths:
        (lines[name],) = ax.plot([], [], "-", lw=1.3, color=color(name),
                                 label=catalog.OPTIMIZERS[name].label)  # fmt: skip
    fig.legend(fontsize=6, loc="outside right upper", frameon=False)
    steps = max(len(t) for _, t in paths)
    frames = np.unique(np.linspace(1, steps, FRAMES).astype(int))

    def draw(n: int) -> list:
        for name, traj in paths:  # point 0 of each run (Rastrigin starts 16; one path is enough)
            lines[name].set_data(traj[:n, 0, 0], traj[:n, 0, 1])
        ax.set_title(f"{p.title}: step {min(n, steps) - 1}", fontsize=9)
        return list(lines.values())

    animation = FuncAnimation(fig, draw, frames=frames, blit=False)
    # PillowWriter needs a file name; a temporary one, removed afterwards
    fd, tmp = tempfile.mkstemp(suffix=".gif")
    os.close(fd)
    try:
        animation.save(tmp, writer=PillowWriter(fps=12), dpi=72)
        return Path(tmp).read_bytes()
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)
