"""Progress reporting with an ETA, written through the standard logging module."""

from __future__ import annotations

import logging
import time


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class Progress:
    """Logs ``label i/n (pct) elapsed ETA`` lines, at most every ``every_s`` seconds.

    ``start`` lets a resumed job count only the work done in this process when it
    extrapolates the remaining time.
    """

    def __init__(self, total: int, label: str, logger: logging.Logger | None = None,
                 every_s: float = 5.0, start: int = 0):
        self.total = max(1, int(total))
        self.label = label
        self.logger = logger or logging.getLogger("eae")
        self.every_s = every_s
        self.start = start
        self.t0 = time.monotonic()
        self._last = -float("inf")

    def update(self, done: int, message: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and done < self.total and now - self._last < self.every_s:
            return
        self._last = now
        elapsed = now - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 and done > self.start else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        eta_s = format_seconds(eta) if eta == eta else "?"
        self.logger.info(
            "%s %d/%d (%.0f%%) elapsed %s ETA %s %s",
            self.label, done, self.total, 100.0 * done / self.total,
            format_seconds(elapsed), eta_s, message,
        )


def setup_logging(log_file: str | None = None, level: int = logging.INFO,
                  device: bool = True) -> logging.Logger:
    """Configure the 'eae' logger to write to ``log_file`` (and stderr).

    With ``device`` (the default for job logs) the first line names the device the job
    runs on, as its provenance record does: ``device: GPU: NVIDIA H200 (x1)`` or
    ``device: CPU: <model> (N cores)``. A stage that runs TensorFlow must have imported
    it (any TensorFlow module of this package, or :mod:`eae.support.runtime`) before this call.
    """
    logger = logging.getLogger("eae")
    logger.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        handlers.append(logging.FileHandler(log_file, mode="a"))
    logger.handlers.clear()
    for handler in handlers:
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    logger.propagate = False
    if device:
        from eae.support.provenance import device_description

        logger.info("device: %s", device_description())
    return logger
