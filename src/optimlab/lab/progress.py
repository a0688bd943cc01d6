"""Progress for a study: tqdm bars on a terminal, a few plain lines otherwise.

On a terminal: one bar for the study (runs, with an ETA) and one for the run in
progress (steps).  When stderr is not a terminal (CI, a pipe, a log file) there
are no bars; a line is printed per finished problem, so logs stay short.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(self, total: int, *, stream: TextIO | None = None, bars: bool | None = None):
        self.stream = stream or sys.stderr
        self.bars = self.stream.isatty() if bars is None else bars
        self.total = total
        self.count = 0
        self._study = self._run = None
        if self.bars:
            from tqdm import tqdm

            self._tqdm = tqdm
            self._study = tqdm(total=total, desc="study", unit="run", file=self.stream,
                               dynamic_ncols=True, position=0)  # fmt: skip

    def line(self, text: str) -> None:
        if self._study is not None:
            self._study.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def skip(self) -> None:
        self.count += 1
        if self._study is not None:
            self._study.update(1)

    def start_run(self, label: str, steps: int) -> Callable[[int], None] | None:
        if self._study is None:
            return None
        self._run = self._tqdm(total=steps, desc=label, unit="step", leave=False,
                               file=self.stream, dynamic_ncols=True, position=1)  # fmt: skip
        run = self._run

        def update(done: int) -> None:
            run.update(done - run.n)

        return update

    def end_run(self) -> None:
        if self._run is not None:
            self._run.close()
            self._run = None
        self.skip()

    def problem_done(
        self, name: str, new: int, seconds: float, chosen: Mapping[tuple[str, str], float | None]
    ) -> None:
        diverged = [f"{o}/{s}" for (o, s), lr in chosen.items() if lr is None]
        note = f"; every lr diverged for {', '.join(diverged)}" if diverged else ""
        self.line(
            f"lab: {name}: done ({self.count}/{self.total} runs of the study; "
            f"{new} new in {seconds:.0f} s){note}"
        )

    def close(self) -> None:
        if self._run is not None:
            self._run.close()
        if self._study is not None:
            self._study.close()
