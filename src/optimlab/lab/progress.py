"""Progress for a study: tqdm bars on a terminal, a few plain lines otherwise.

On a terminal: one bar for the study (runs, with an ETA) and one for the run in
progress (steps).  When stderr is not a terminal (CI, a pipe, a log file) there
are no bars; a line is printed per finished problem, so logs stay short.  The
study's total grows when a comparison asks for more seeds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

__all__ = ["Progress"]


def _has_size(stream: TextIO) -> bool:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return size.columns > 0 and size.lines > 0


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
            self._sized = _has_size(self.stream)
            self._study = self._bar(total=total, desc="study", unit="run", position=0)

    def _bar(self, **kwargs):
        # a terminal that reports no size (a pty under `script`, some CI shells) gets 100 x 40:
        # tqdm would otherwise draw bars 0 wide and hide every bar below row 0, that is all
        size = dict(dynamic_ncols=True) if self._sized else dict(ncols=100, nrows=40)
        return self._tqdm(file=self.stream, **size, **kwargs)

    def line(self, text: str) -> None:
        if self._study is not None:
            self._study.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def skip(self) -> None:
        self.count += 1
        if self.count > self.total:
            self.total = self.count
            if self._study is not None:
                self._study.total = self.total
        if self._study is not None:
            self._study.update(1)

    def start_run(self, label: str, steps: int) -> Callable[[int], None] | None:
        if self._study is None:
            return None
        self._run = self._bar(total=steps, desc=label, unit="step", leave=False, position=1)
        run = self._run

        def update(done: int) -> None:
            run.update(done - run.n)

        return update

    def end_run(self) -> None:
        if self._run is not None:
            self._run.close()
            self._run = None
        self.skip()

    def problem_done(self, name: str, new: int, seconds: float, diverged: Sequence[str]) -> None:
        note = f"; every lr diverged for {', '.join(diverged)}" if diverged else ""
        runs = f"{new} run{'' if new == 1 else 's'}"
        self.line(f"lab: {name}: done ({runs} trained in {seconds:.0f} s){note}")

    def close(self) -> None:
        if self._run is not None:
            self._run.close()
        if self._study is not None:
            self._study.close()
