"""systemd's notify protocol (sd_notify(3)) through sdnotify: READY, STATUS, WATCHDOG, RELOADING,
STOPPING. Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op and the daemon runs the same.
"""

from __future__ import annotations

import os
import time


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._n = None
        if self.enabled:
            import sdnotify

            self._n = sdnotify.SystemdNotifier()
            if self._n.socket is not None:
                # As sd_notify(3) does: never wait on a receiver that is not reading (its queue full).
                # A dropped message is sdnotify's to ignore; a daemon blocked in send() is a hung one.
                self._n.socket.setblocking(False)
        self.watchdog_interval = self._watchdog_interval()
        self._last_status: str | None = None

    @staticmethod
    def _watchdog_interval() -> float | None:
        """Half of ``WATCHDOG_USEC`` (sd_watchdog_enabled(3)): pings at that pace leave room for one
        late iteration. None when systemd set no watchdog, or set it for another process."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or not usec.isdigit() or int(usec) == 0:
            return None
        if pid and pid.isdigit() and int(pid) != os.getpid():
            return None
        return int(usec) / 1e6 / 2

    def send(self, *fields: str) -> None:
        if self._n is not None:
            self._n.notify("\n".join(fields))

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        if text != self._last_status:  # systemd keeps the last one; unchanged lines are not resent
            self._last_status = text
            self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) tie READY=1 to this reload.
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")
