"""Progress of long loops (graphs, training steps, files, configurations), on stderr.

On a terminal it is a tqdm bar; lines printed to stdout meanwhile appear above the bar
instead of being glued to it. Anywhere else (a log file, a pipe, a batch system) a
carriage return would glue the counts together, so it is whole lines in tqdm's format:
one at every tenth of the total, at most one per ``min_gap`` seconds, at least one per
``max_gap`` seconds, and always the last one.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator, TextIO

from tqdm import tqdm
from tqdm.contrib import DummyTqdmFile

_LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"


class _Lines:
    """The non-terminal form: ``update`` like tqdm's, printing whole lines."""

    def __init__(self, total: int, desc: str, unit: str, initial: int, stream: TextIO,
                 min_gap: float, max_gap: float):
        self.total, self.desc, self.unit, self.initial, self.stream = total, desc, unit, initial, stream
        self.min_gap, self.max_gap = min_gap, max_gap
        self.n = initial
        self.started = self.last_line = time.monotonic()
        self.tenth = 10 * initial // total

    def update(self, n: int = 1) -> None:
        finished_before = self.n >= self.total
        self.n += n
        now, tenth = time.monotonic(), 10 * self.n // self.total
        since = now - self.last_line
        due = (tenth > self.tenth and since >= self.min_gap) or since >= self.max_gap
        if (self.n >= self.total and not finished_before) or (due and self.n < self.total):
            self.tenth, self.last_line = tenth, now
            print(tqdm.format_meter(self.n, self.total, now - self.started, prefix=self.desc, unit=self.unit,
                                    initial=self.initial, bar_format=_LINE_FORMAT),
                  file=self.stream, flush=True)


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def progress(total: int, desc: str, *, unit: str = "it", initial: int = 0, enabled: bool = True,
             stream: TextIO | None = None, min_gap: float = 5.0, max_gap: float = 300.0) -> Iterator:
    """A counter to ``update()`` once per item done, shown as the module docstring says.

    total: items in the loop (≤ initial, or disabled: nothing is shown).
    initial: items already done (a resumed loop); rates and estimates count only the rest.
    stream: where it goes (default: sys.stderr at the time of the call).
    min_gap, max_gap: seconds between lines off a terminal (the last line is always written).
    """
    stream = sys.stderr if stream is None else stream
    if not enabled or total <= initial:
        yield _Silent()
    elif stream.isatty():
        with tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream, dynamic_ncols=True) as bar, \
                contextlib.redirect_stdout(DummyTqdmFile(sys.stdout)):
            yield bar
    else:
        yield _Lines(total, desc, unit, initial, stream, min_gap, max_gap)
