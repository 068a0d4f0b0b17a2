"""How a baseline run shows its progress over the classes: a bar on a terminal, plain lines in a log file."""

from __future__ import annotations

import sys
import time

from wfkern._utils import interactive
from wfkern.unlearn.progress import format_clock

__all__ = ["ClassProgress"]

# Plain lines (no terminal): one when a class finishes, at least this many seconds apart (the last class always).
LINE_MIN_S = 10.0


class ClassProgress:
    """Progress over the classes of ``run_baseline``, shown on ``stream`` (default stderr).

    ``mode``: "bar" (a terminal or a notebook: a tqdm bar over the classes; the methods' per-epoch bars show
    beneath it), "lines" (anything else, e.g. a log file: a plain line as classes finish, at most every
    ``LINE_MIN_S`` seconds and after the last, never a carriage return or escape code; the methods show no
    bars) or None (progress off: nothing).

    Args:
        desc: what runs ("baseline ft").  total: the classes of the run.  enabled: show anything at all.
        stream: where to write (a file-like object).
    """

    def __init__(self, desc: str, total: int, enabled: bool, stream=None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.mode = None if not enabled else ("bar" if interactive(self.stream) else "lines")
        self.desc, self.total = desc, total
        self.done = self.ran = 0
        self.t0 = self.last = time.monotonic()
        self.bar = None

    @property
    def bars(self) -> bool:
        """Whether the methods may draw their own (per-epoch) bars: only beneath a bar, on a terminal."""
        return self.mode == "bar"

    def __enter__(self) -> "ClassProgress":
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, dynamic_ncols=True, file=self.stream)
        elif self.mode == "lines":
            self._print(f"{self.desc}: {self.total} class{'es' * (self.total != 1)}")
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def class_done(self, c: int, ran: bool) -> None:
        """Class ``c`` is finished: ``ran`` (unlearned now) or found done by an earlier run (resumed)."""
        self.done += 1
        self.ran += ran
        if self.bar is not None:
            self.bar.update(1)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self.last < LINE_MIN_S and self.done < self.total:
                return
            elapsed = now - self.t0
            rest = self.total - self.done
            left = f", ~{format_clock(elapsed / self.ran * rest)} left" if self.ran and rest else ""
            earlier = self.done - self.ran
            resumed = f"; {earlier} done by an earlier run" if earlier else ""
            self._print(f"{self.desc}: class {c} done ({self.done}/{self.total}), {format_clock(elapsed)} "
                        f"elapsed{left}{resumed}")
            self.last = now
