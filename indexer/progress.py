"""Progress of long jobs on stderr: a tqdm bar on a terminal, and a plain line every few seconds when
stderr is a file or a pipe (a cron log), where a bar's carriage returns would show nothing useful."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

LOG_EVERY_S = 10.0  # how often a line goes to a log


class LogProgress:
    """tqdm's update/set_postfix/close for a log: `desc: done/total unit (pct), rate, ETA` lines."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        file: TextIO,
        every_s: float = LOG_EVERY_S,
    ) -> None:
        self.total, self.desc, self.unit, self.file, self.every_s = total, desc, unit, file, every_s
        self.n = 0
        self.postfix = ""
        self.started = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._write(now)

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None:
        if self.n:
            self._write(time.monotonic())

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.n / elapsed
        parts = [f"{self.desc}: {self.n}"]
        if self.total:
            parts[0] += f"/{self.total} {self.unit}s ({100 * self.n / self.total:.0f} %)"
        else:
            parts[0] += f" {self.unit}s"
        parts.append(f"{rate:.1f} {self.unit}s/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {_clock((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def _write(self, now: float) -> None:
        print(self.line(now), file=self.file, flush=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def progress_bar(
    total: int | None, desc: str, unit: str, enabled: bool, file: TextIO | None = None
) -> Any:
    """A tqdm bar when `file` (stderr) is a terminal, LogProgress lines when it is not, nothing when
    not `enabled`."""
    out = file if file is not None else sys.stderr
    if enabled and not out.isatty():
        return LogProgress(total, desc, unit, out)
    return tqdm(total=total, unit=unit, desc=desc, file=out, disable=not enabled, smoothing=0.1)
