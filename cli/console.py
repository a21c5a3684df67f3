"""What `prumux-search start` prints while it runs: lines that stay, and one live line per running trial.

The live lines come from the trials themselves (their progress records in the study, see
``storage.progress``): the point, its phase and stage, step/total, the last evaluation, the
trial's elapsed time and the stage's ETA. On a terminal they are redrawn in place under the
lines that stay; in a log (a pipe, a file, a Ray Job's output) a trial's line is printed when
its stage changes, when the stage's first evaluation arrives, and otherwise every
``LOG_EVERY_S`` seconds.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

LOG_EVERY_S = 10.0
_UP_AND_CLEAR = "\x1b[F\x1b[2K"


class SearchConsole:
    """Permanent lines (``line``) and the running trials' live lines (``progress``), thread-safe."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None, log_every_s: float = LOG_EVERY_S):
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.log_every_s = log_every_s
        self._lock = threading.Lock()
        self._shown: list[str] = []  # live lines on screen now (terminal mode)
        self._logged: dict[int, tuple[tuple, float]] = {}  # trial -> (what it showed, when) of its last logged line

    def line(self, text: str) -> None:
        """Print a line that stays (above the live lines)."""
        with self._lock:
            shown = self._shown
            self._clear()
            self.stream.write(text + "\n")
            self._draw(shown)

    def progress(self, records: dict[int, dict[str, Any]]) -> None:
        """Show the running trials' latest progress records (trial number -> record)."""
        now = time.time()
        lines = {number: progress_line(number, record, now) for number, record in sorted(records.items())}
        with self._lock:
            if self.live:
                self._clear()
                self._draw(list(lines.values()))
                return
            for number, record in sorted(records.items()):
                news = (record.get("stage"), record.get("accuracy") is not None)
                shown, logged_at = self._logged.get(number, (None, 0.0))
                if news != shown or now - logged_at >= self.log_every_s:
                    self.stream.write(lines[number] + "\n")
                    self._logged[number] = (news, now)
            self.stream.flush()

    def close(self) -> None:
        """Remove the live lines (the run is over)."""
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        if self._shown:
            self.stream.write(_UP_AND_CLEAR * len(self._shown))
        self._shown = []

    def _draw(self, lines: list[str]) -> None:
        if self.live and lines:
            self.stream.write("".join(line + "\n" for line in lines))
            self._shown = lines
        self.stream.flush()


def progress_line(number: int, record: dict[str, Any], now: float | None = None) -> str:
    """One trial's live line, e.g. ``trial 3  N=2 s=0.5  phase 3 prune 120/800  accuracy 0.612  elapsed 1m05s  ETA 3m10s``."""
    since = max(0.0, (now or time.time()) - record.get("time", now or time.time()))
    stage = record.get("stage", "?")
    if stage == "preparing":
        where = "preparing (task, tokenizer, cached models)"
    else:
        phase = f"phase {record['phase']} " if record.get("phase") else ""
        where = f"{phase}{stage} {record.get('step', 0)}/{record.get('total', 0)}"
    parts = [f"trial {number}", f"N={record.get('N')} s={record.get('s', 0):g}", where]
    if record.get("accuracy") is not None:
        parts.append(f"accuracy {record['accuracy']:.3f}")
    parts.append(f"elapsed {duration(record.get('elapsed', 0.0) + since)}")
    if record.get("eta") is not None:
        parts.append(f"ETA {duration(max(0.0, record['eta'] - since))}")
    return "  ".join(parts)


def duration(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``4000`` -> ``1h06m``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
