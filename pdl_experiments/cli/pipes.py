"""A console script whose stdout pipe closes (`pdl-run --help | head -1`) ends quietly.

Python ignores SIGPIPE: a write to a closed pipe raises BrokenPipeError instead, which a
console script would report as an error (`pdl-run: error: [Errno 32] Broken pipe`), or
Python itself at exit when it flushes the buffered output. SIGPIPE's default action is not
restored (the usual shortcut): it would also kill the process, with no checkpoint and no
message, whenever any other pipe or socket it writes to breaks (a launcher's worker, an
MLflow server). Instead, when stdout is a pipe, the first write that finds it closed points
stdout at /dev/null (nothing is left to fail at exit) and ends the program with status 141
(128 + SIGPIPE), as `yes | head -1` ends; a write at interpreter exit just goes quiet.
"""

from __future__ import annotations

import os
import stat
import sys
from typing import Any

EXIT_STATUS = 141  # 128 + SIGPIPE, what a shell reports for a process a closed pipe ended


class _QuietWhenClosed:
    """sys.stdout as it was, except that a closed pipe ends the program quietly."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, s: str) -> int:
        try:
            return self._stream.write(s)
        except BrokenPipeError:
            self._closed()
            return len(s)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed()

    def _closed(self) -> None:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
            self._stream.flush()  # what was buffered goes to /dev/null
        except (OSError, ValueError):
            pass
        if not sys.is_finalizing():  # at exit there is nothing left to stop
            raise SystemExit(EXIT_STATUS)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def quiet_closed_stdout() -> None:
    """Make a closed stdout pipe end the program quietly (see the module docstring)."""
    out = sys.stdout
    if out is None or isinstance(out, _QuietWhenClosed):
        return
    try:
        is_pipe = stat.S_ISFIFO(os.fstat(out.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):  # no file descriptor (a test's capture)
        return
    if is_pipe:
        sys.stdout = _QuietWhenClosed(out)
