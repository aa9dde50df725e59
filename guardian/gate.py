"""The ExecStartPre= policy: validate, heal, decide.

Paper mode always starts. Real mode starts only when, after healing, no CRITICAL finding remains and
the health score is at least ``thresholds.min_health_score``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from guardian.fsutil import LockBusy, atomic_write, read_regular
from guardian.heal import HealResult

EXIT_ALLOW, EXIT_REFUSE = 0, 1


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str  # the one line an operator sees in `systemctl status tradingbot`
    reasons: tuple[str, ...]  # each blocking finding, for the alert log and --json
    result: HealResult

    @property
    def exit_code(self) -> int:
        return EXIT_ALLOW if self.allowed else EXIT_REFUSE

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "reasons": list(self.reasons),
            "score": self.result.after.score,
            "heal": self.result.to_json(),
        }


def decide(result: HealResult, *, mode: str, min_score: int) -> Decision:
    after = result.after
    crit = after.critical()
    score = after.score
    healed = sum(1 for a in result.actions if a.outcome.value == "healed")
    tail = f"score {score}/100" + (f", healed {healed}" if healed else "")
    reasons = tuple(f"{f.code} {f.subject}" for f in crit)
    if mode == "paper":
        worst = after.worst
        what = f"{len(after.findings)} finding(s) reported, worst {worst.name}" if worst else "state sound"
        return Decision(True, f"guardian gate: ALLOWED (paper mode always starts): {what}; {tail}", reasons, result)
    if crit:
        shown = "; ".join(reasons[:3]) + (f"; +{len(reasons) - 3} more" if len(reasons) > 3 else "")
        return Decision(
            False, f"guardian gate: REFUSED (real mode): {len(crit)} CRITICAL: {shown}; {tail}", reasons, result
        )
    if score < min_score:
        return Decision(
            False,
            f"guardian gate: REFUSED (real mode): health score {score} below {min_score}; {tail}",
            tuple(f"{f.code} {f.subject}" for f in after.findings),
            result,
        )
    return Decision(True, f"guardian gate: ALLOWED (real mode): no CRITICAL finding; {tail}", (), result)


# --- The gate's decisions, counted for the daemon's metrics (guardian/daemon/metrics.py) ---

GATE_FILE = "gate.json"


def record_decision(directory: Path, *, allowed: bool, mode: str, reason: str, now: datetime) -> None:
    """Count one decision in ``<directory>/gate.json``, with the last one and when each kind was last made.

    The gate is its own process at every start of the bot, so the count is read, bumped and
    rewritten (atomically) under an flock that every gate takes: two gates never lose a count.
    A corrupt gate.json restarts the counts at 0, which Prometheus reads as a counter reset.
    Raise OSError (LockBusy when the lock is held for over 5 s): the caller warns, the gate goes on.
    """
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / f"{GATE_FILE}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + 5.0
        while True:  # bounded: a stuck holder must not hang the bot's ExecStartPre=
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockBusy(errno.EAGAIN, "held by another process for over 5s", str(lock)) from None
                time.sleep(0.01)
        data = read_decisions(directory)
        kind = "allowed" if allowed else "refused"
        counts = {
            k: v if isinstance(v := data.get(k), int) and not isinstance(v, bool) and v >= 0 else 0
            for k in ("allowed", "refused")
        }
        counts[kind] += 1
        t = now.timestamp()
        out = {
            **counts,
            "last": {"allowed": allowed, "mode": mode, "reason": reason, "ts": now.isoformat(), "t": t},
            "last_allowed_t": data.get("last_allowed_t"),
            "last_refused_t": data.get("last_refused_t"),
            f"last_{kind}_t": t,
        }
        atomic_write(directory / GATE_FILE, json.dumps(out, indent=1).encode() + b"\n")
    finally:
        os.close(fd)  # releases the flock


def read_decisions(directory: Path) -> dict[str, Any]:
    """The content of ``<directory>/gate.json``; {} when it is missing, unreadable or not a JSON object."""
    try:
        data = json.loads(read_regular(directory / GATE_FILE, max_bytes=1 << 20))
    except (OSError, ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return {}
    return data if isinstance(data, dict) else {}
