"""Progress bars for every loop of the kit: tqdm when it is installed, a plain throttled line otherwise.

Training, encoding, probes and data generation all show progress through this module:
- in a terminal or a Jupyter notebook, tqdm redraws one line in place;
- elsewhere (make demo's log, CI), tqdm prints at most one line every LOG_INTERVAL_S seconds, so that a bar
  over thousands of quick steps leaves a handful of lines in the log;
- without tqdm (a course hub kernel may lack it), PlainProgress prints a line such as
  "ntxent: 40/138 step (29%), 12.3 step/s, 3 s elapsed, loss=4.12" at most every LOG_INTERVAL_S seconds and
  once at the end; the fallback is announced once (utils.environment.optional_import).

    bar = progress_bar(total=1000, desc="train", unit="step")     # or progress_bar(iterable, desc=...)
    progress_write("epoch 2: ...")                                # a line that does not break the bar
"""
from __future__ import annotations

import sys
import time

from utils.environment import in_jupyter_kernel, optional_import

LOG_INTERVAL_S = 5.0   # at most one progress line this often when the output cannot redraw in place


def redraws_in_place(stream) -> bool:
    """True when a bar can redraw its line: inside a Jupyter kernel, or `stream` is a terminal."""
    if in_jupyter_kernel():
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False


def _tqdm_class():
    """tqdm.auto's class (the notebook widget in Jupyter, the text bar elsewhere), or None without tqdm."""
    module = optional_import("tqdm.auto")
    return None if module is None else module.tqdm


def progress_bar(iterable=None, total=None, desc: str | None = None, disable: bool = False, unit: str = "it",
                 initial: int = 0, leave: bool = True, file=None, **tqdm_options):
    """A progress bar over `iterable` (or updated by hand with .update(n) up to `total`), on `file` (default
    sys.stderr): a tqdm bar when tqdm is installed, else a PlainProgress with the methods the kit uses
    (iteration, update, set_postfix, set_postfix_str, close, total, n). `tqdm_options` go to tqdm only."""
    tqdm = _tqdm_class()
    stream = sys.stderr if file is None else file
    if tqdm is None:
        return PlainProgress(iterable, total=total, desc=desc, disable=disable, unit=unit, initial=initial,
                             file=stream)
    if not redraws_in_place(stream):
        tqdm_options.setdefault("mininterval", LOG_INTERVAL_S)
        tqdm_options["dynamic_ncols"] = False   # no terminal whose width could be read
    return tqdm(iterable, total=total, desc=desc, disable=disable, unit=unit, initial=initial, leave=leave,
                file=file, **tqdm_options)


def progress_write(message: str) -> None:
    """Print a line to standard output without breaking an open bar (tqdm.write), or plainly without tqdm."""
    tqdm = _tqdm_class()
    if tqdm is None:
        print(message, flush=True)
    else:
        tqdm.write(message)


class PlainProgress:
    """The progress bar without tqdm: one printed line at most every `interval` seconds, and a last one when
    it closes. `clock` is the time source (seconds; replaceable in tests)."""

    def __init__(self, iterable=None, total=None, desc: str | None = None, disable: bool = False,
                 unit: str = "it", initial: int = 0, file=None, interval: float | None = None, clock=time.monotonic):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.disable, self.unit = iterable, total, desc, disable, unit
        self.n = self.printed_n = self.initial = initial
        self.file = sys.stderr if file is None else file
        self.interval = LOG_INTERVAL_S if interval is None else interval
        self.clock = clock
        self.start = self.last_print = clock()
        self.postfix = ""
        self.closed = False

    def __iter__(self):
        if self.iterable is None:
            raise TypeError("PlainProgress: iterate over a bar made with an iterable, or call update(n)")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last_print >= self.interval:
            self._print(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{key}={value}" for key, value in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def close(self) -> None:
        if not self.closed and self.n != self.printed_n:
            self._print(self.clock())
        self.closed = True

    def line(self, now: float) -> str:
        """'desc: 40/138 step (29%), 12.3 step/s, 3 s elapsed, loss=4.12' (no total: '40 step, ...')."""
        elapsed = now - self.start
        count = f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)" if self.total \
            else f"{self.n} {self.unit}"
        rate = f"{(self.n - self.initial) / elapsed:.1f} {self.unit}/s" if elapsed > 0 else ""
        parts = [count, rate, f"{elapsed:.0f} s elapsed", self.postfix]
        return f"{self.desc or 'progress'}: " + ", ".join(p for p in parts if p)

    def _print(self, now: float) -> None:
        if self.disable or self.closed:
            return
        print(self.line(now), file=self.file, flush=True)
        self.last_print, self.printed_n = now, self.n
