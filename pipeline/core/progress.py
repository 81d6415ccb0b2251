"""Progress of long loops (training epochs, EM iterations): a bar on terminals, log lines otherwise."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class Progress:
    """Progress of a long loop: a tqdm bar on a terminal; otherwise a log line every `every`
    seconds (and at the end), so that a log file shows the run is alive."""

    def __init__(self, total: int, unit: str, *, every: float = 10.0, logger=None):
        import sys
        import time
        from tqdm import tqdm
        self.log, self.unit, self.total, self.every = logger or log, unit, total, every
        self.n, self.start, self.last, self.time = 0, time.monotonic(), time.monotonic(), time.monotonic
        self.bar = (tqdm(total=total, unit=unit.rstrip("s"), leave=False)
                    if sys.stderr.isatty() else None)

    def step(self, note: str = "") -> None:
        self.n += 1
        if self.bar is not None:
            self.bar.set_postfix_str(note, refresh=False)
            self.bar.update(1)
        elif self.time() - self.last >= self.every:
            self.last = self.time()
            self.log.info("%d/%d %s: %s (%.0f s)", self.n, self.total, self.unit, note,
                          self.last - self.start)

    def close(self, note: str = "") -> None:
        if self.bar is not None:
            self.bar.close()
        if self.time() - self.start >= self.every:
            self.log.info("%d %s in %.0f s%s", self.n, self.unit, self.time() - self.start,
                          f"; {note}" if note else "")
