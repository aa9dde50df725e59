"""The operator's alert log: one JSON object per line, appended durably."""

from __future__ import annotations

import json
import os
from pathlib import Path

from guardian.alerts import Alert


class JsonlSink:
    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path

    def emit(self, alert: Alert) -> None:
        # One write() of a whole line on an O_APPEND descriptor: concurrent writers (the gate and
        # the daemon) never interleave inside a line. json.dumps escapes newlines, so a field cannot
        # forge a second line.
        line = json.dumps(alert.to_json(), ensure_ascii=False, default=str, separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
