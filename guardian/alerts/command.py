"""Alerts to a command: argv run with the alert JSON on stdin (a Telegram or Slack bridge).

No shell. The command gets the JSON on stdin and, for a shell script's convenience, the main
fields in ``GUARDIAN_ALERT_*`` environment variables. It runs in a session of its own so that on
timeout the whole group (a script and whatever it started) is killed. A nonzero exit or a timeout
raises, and the :class:`~guardian.alerts.Alerter` reports it as a warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Sequence

from guardian.alerts import Alert


class CommandSink:
    name = "command"

    def __init__(self, argv: Sequence[str], timeout: float = 10.0) -> None:
        if not argv:
            raise ValueError("alerts.command: an empty argv")
        self.argv = list(argv)
        self.timeout = timeout

    @property
    def _label(self) -> str:
        # Only the program's name: arguments may carry a token.
        return os.path.basename(self.argv[0])

    def emit(self, alert: Alert) -> None:
        data = json.dumps(alert.to_json(), ensure_ascii=False, default=str).encode()
        fields = {
            "GUARDIAN_ALERT_LEVEL": alert.level,
            "GUARDIAN_ALERT_CODE": alert.code,
            "GUARDIAN_ALERT_SUBJECT": alert.subject,
            "GUARDIAN_ALERT_EVENT": alert.event,
            "GUARDIAN_ALERT_LINE": alert.line(),
        }
        env = {**os.environ, **{k: v.replace("\0", "") for k, v in fields.items()}}  # NUL cannot be in env
        proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        try:
            _, err = proc.communicate(data, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            raise RuntimeError(f"command {self._label} timed out after {self.timeout:g}s and was killed") from None
        except BaseException:
            self._kill(proc)
            raise
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            why = f": {lines[0].strip()}" if lines else ""
            how = (
                f"was killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exited with {proc.returncode}"
            )
            raise RuntimeError(f"command {self._label} {how}{why}")

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        """Kill the command's process group (its own session, started above) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()  # harmless if the group kill already ended it
        proc.wait()
        for stream in (proc.stdin, proc.stderr):  # a grandchild that left the group may hold them
            if stream is not None:
                stream.close()
