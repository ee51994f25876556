"""
The progress line: one line on a terminal, rewritten in place; a line per
step (and one every few seconds) when stderr is a file or a pipe.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, stream=sys.stderr) -> None:
        self.total = total
        self.done = 0
        self.began = time.monotonic()
        self.stream = stream
        self.tty = stream.isatty()
        self.step_name = ""
        self.detail = ""
        self._last = 0.0

    def step(self, name: str) -> None:
        if self.step_name:
            self.done += 1
        self.step_name = name
        self.detail = ""
        self._write(force=True)

    def tick(self, detail: str | None = None) -> None:
        if detail is not None:
            self.detail = detail
        self._write()

    def note(self, text: str) -> None:
        "A line of its own, above the progress line."
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self._write(force=True)

    def finish(self) -> None:
        self.done = self.total
        self.step_name, self.detail = "done", ""
        self._write(force=True)
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()

    def _write(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < (0.25 if self.tty else 5.0):
            return
        self._last = now
        elapsed = int(now - self.began)
        line = (
            f"[{self.done + (0 if self.step_name == 'done' else 1):>2}/{self.total} "
            f"{elapsed // 60}:{elapsed % 60:02d}] {self.step_name}"
            + (f"  {self.detail}" if self.detail else "")
        )
        if self.tty:
            self.stream.write("\r\033[K" + line[:160])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
