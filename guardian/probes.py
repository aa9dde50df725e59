"""Probes of the running system: bot processes (psutil) and who holds which lock (/proc/locks)."""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from guardian.context import BotProcess, Context

# What runs the bot's code: an interpreter, so that an operator's shell or editor sitting in a slot
# is never mistaken for (and never killed as) a bot process.
INTERPRETERS = ("python", "python3", "python3.*", "pypy*")


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live process (a zombie is dead: it holds no locks and does no work)."""
    import psutil

    if pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return psutil.pid_exists(pid) if pid > 0 else False


def _slot_of(path: Path, slots: Path) -> str | None:
    try:
        rel = path.relative_to(slots)
    except ValueError:
        return None
    return rel.parts[0] if rel.parts else None


def _is_guardian(cmdline: list[str]) -> bool:
    names = [os.path.basename(a) for a in cmdline[:3]]
    return "guardian" in names or any(pair == ("-m", "guardian") for pair in itertools.pairwise(cmdline))


def _in_unit(pid: int, unit: str) -> bool | None:
    """Whether ``pid`` belongs to the bot unit's cgroup; None when that cannot be read."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    return any(unit in line.split(":", 2)[-1].strip().split("/") for line in text.splitlines())


def script_arg(cmdline: list[str] | tuple[str, ...]) -> str | None:
    """The script an interpreter runs: its first argument that is not an option; none with -c or -m,
    where what follows is the code's own arguments (``python -m json.tool FILE``)."""
    args = iter(cmdline[1:])
    for a in args:
        if a.startswith(("-c", "-m")):
            return None
        if a in ("-W", "-X"):  # options that take a value
            next(args, None)
        elif not a.startswith("-"):
            return a
    return None


def find_bot_processes(ctx: Context) -> list[BotProcess]:
    """Processes running the bot's code: an interpreter whose cwd or script lies in the home."""
    import psutil

    from guardian.context import BotProcess

    home = ctx.home.resolve()
    slots = ctx.slots_dir.resolve()
    me = os.getpid()
    found: list[BotProcess] = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cwd", "create_time"]):
        info = proc.info
        cmdline: list[str] = info.get("cmdline") or []
        if info["pid"] == me or not cmdline:
            continue
        exe = os.path.basename(cmdline[0])
        if not any(fnmatch.fnmatch(exe, pat) for pat in INTERPRETERS) or _is_guardian(cmdline):
            continue
        cwd = info.get("cwd")
        # The kernel gives the cwd resolved; the script is resolved here. Either way the slot is the one
        # the process really runs from, not the one the link names now. Other arguments do not count: a
        # tool that reads the bot's positions file is not the bot.
        paths = [Path(cwd)] if cwd else []
        script = script_arg(cmdline)
        if script is not None:
            with contextlib.suppress(OSError, RuntimeError):
                paths.append((Path(cwd or "/") / script).resolve())
        inside = [p for p in paths if p.is_relative_to(home)]
        mine = bool(inside)
        slot = next((s for p in inside if (s := _slot_of(p, slots))), None)
        if mine:
            found.append(
                BotProcess(
                    info["pid"],
                    tuple(cmdline),
                    cwd,
                    slot,
                    bool(_in_unit(info["pid"], ctx.cfg.bot.unit)),
                    info.get("create_time"),
                )
            )
    return found


def read_lock_holders() -> dict[tuple[int, int], list[int]]:
    """Map (st_dev, st_ino) of every locked file to the pids holding a lock on it."""
    holders: dict[tuple[int, int], list[int]] = {}
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return holders
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[1] == "->":  # "->" lines are waiters, not holders
            continue
        try:
            pid = int(parts[4])
            major, minor, inode = parts[5].split(":")
            dev = os.makedev(int(major, 16), int(minor, 16))
            holders.setdefault((dev, int(inode)), []).append(pid)
        except ValueError:
            continue
    return holders


def soft_lock_owner(content: bytes) -> tuple[int, str] | None:
    """The (pid, host) a soft lock marker names (filelock's SoftFileLock writes ``pid\\nhost\\n``)."""
    lines = content.decode("utf-8", "replace").split()
    if not lines or not lines[0].isdigit():
        return None
    return int(lines[0]), (lines[1] if len(lines) > 1 else socket.gethostname())
