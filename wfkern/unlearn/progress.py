"""How the untraining round shows its progress: a bar on a terminal, plain lines in a log file, number formats."""

from __future__ import annotations

import contextlib
import math
import sys
import time

from wfkern._utils import interactive

__all__ = ["Reporter", "format_loss", "format_pct", "format_clock"]


def format_loss(x: float) -> str:
    """A loss-like number with sensible precision: 3 significant digits, never scientific for 1e-3..1e6."""
    if x is None or not math.isfinite(x):
        return str(x)
    magnitude = abs(x)
    if magnitude == 0:
        return "0"
    if magnitude >= 100:
        return f"{x:.0f}"
    if magnitude >= 1e-3:
        return f"{x:#.3g}"
    return f"{x:.1e}"


def format_pct(x: float) -> str:
    """A fraction as a percentage with one decimal: 0.9667 -> "96.7%"."""
    return f"{100 * x:.1f}%" if x is not None and math.isfinite(x) else str(x)


def format_clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(max(0.0, seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"



# Plain progress lines (no terminal): one per this fraction of the steps, at least _LINE_MIN_S apart, and one at
# least every _LINE_MAX_S.
_LINE_FRACTION = 0.1
_LINE_MIN_S = 5.0
_LINE_MAX_S = 60.0


class Reporter:
    """How the untraining round shows its progress on rank 0.

    ``mode``: "bar" (a terminal or a notebook: a tqdm bar; its postfix holds the running loss and the last
    validation; log records, e.g. ``-v``'s full validation lines, are written above it, not through it),
    "lines" (anything else, e.g. a log file: plain periodic lines, no carriage returns or escape codes) or None
    (progress off: nothing).
    """

    def __init__(self, total: int, initial: int, enabled: bool, stream=None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.mode = None if not enabled else ("bar" if interactive(self.stream) else "lines")
        self.total, self.initial, self.step_now = total, initial, initial
        self.t0 = time.monotonic()
        self.last_t, self.last_step = self.t0, initial
        self.loss = None
        self.val = ""
        self.bar = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "Reporter":
        if self.mode == "bar":
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.bar = tqdm(total=self.total, initial=self.initial, desc="unlearn", leave=False, dynamic_ncols=True,
                            file=self.stream)
            self._stack.enter_context(logging_redirect_tqdm())  # -v lines above the bar, not through it
        elif self.mode == "lines":
            self._print(f"unlearn: {self.total} steps" + (f", resuming at step {self.initial}" if self.initial else ""))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stack.close()
        if self.bar is not None:
            self.bar.close()
        elif self.mode == "lines" and exc_type is None and self.step_now > self.last_step:
            self._line()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def _postfix(self) -> str:
        parts = [f"loss {format_loss(self.loss)}"] if self.loss is not None else []
        return " | ".join(parts + ([self.val] if self.val else []))

    def _line(self) -> None:
        now = time.monotonic()
        done = self.step_now - self.initial
        elapsed = now - self.t0
        rest = self.total - self.step_now
        left = f", ~{format_clock(elapsed / done * rest)} left" if done > 0 and rest > 0 else ""
        pct = 100.0 * self.step_now / max(1, self.total)
        self._print(f"unlearn: step {self.step_now}/{self.total} ({pct:.0f}%), {format_clock(elapsed)} elapsed{left}; "
                    f"{self._postfix()}")
        self.last_t, self.last_step = now, self.step_now

    def step(self, step: int, running: list) -> None:
        """After an optimiser step: ``running`` = the running (loss, L_r, L_f, R)."""
        self.step_now, self.loss = step, running[0] if running else None
        if self.mode == "bar":
            self.bar.update(1)
            self.bar.set_postfix_str(self._postfix(), refresh=False)
        elif self.mode == "lines":
            since = time.monotonic() - self.last_t
            due = (step - self.last_step) >= _LINE_FRACTION * self.total and since >= _LINE_MIN_S
            if due or since >= _LINE_MAX_S:
                self._line()

    def validation(self, step: int, scores: dict, improved: bool, best_step: int, best_objective: float) -> None:
        """After a validation: its accuracies and the best objective so far go into the postfix / next line."""
        best = "best" if improved else f"best {format_loss(best_objective)} @ {best_step}"
        self.val = f"val acc_r {format_pct(scores['acc_r'])} acc_f {format_pct(scores['acc_f'])} " \
                   f"obj {format_loss(scores['objective'])} ({best})"
        if self.bar is not None:
            self.bar.set_postfix_str(self._postfix())
