"""inotify through watchdog: which directories to watch, which checks an event concerns, and a
hand-off to the main loop that coalesces bursts.

Only the events that mean a file changed as a whole are asked for (created, closed after a write,
moved, deleted): a bot rewriting its positions a hundred times a second costs one event per save,
not one per ``write()``. Directories are watched one by one, never recursively: the bot's data,
feature store and backups change all day and say nothing about its health.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from guardian.alerts.jsonl import rotate_lock_path
from guardian.context import Context

EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]

ALL = "*"  # re-check everything and move the watches (the link flipped)
STATE = frozenset({"state_files", "positions", "limits", "trade_store"})
SHAPE = frozenset({"directories", "state_files", "writable", "temp_files", "heartbeats", "wal", "emergency_stop"})


def real_path(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path


@dataclass
class Router:
    """Maps a path an event names to the checks it concerns (by name, see ``guardian.checks``)."""

    files: dict[Path, frozenset[str]] = field(default_factory=dict)
    dirs: set[Path] = field(default_factory=set)  # what to watch
    heartbeats: Path | None = None
    lock_dirs: set[Path] = field(default_factory=set)
    ignored: set[Path] = field(default_factory=set)
    ignored_dirs: set[Path] = field(default_factory=set)
    temp_patterns: tuple[str, ...] = ()

    @classmethod
    def for_context(cls, ctx: Context) -> Router:
        r = cls(temp_patterns=ctx.cfg.files.temp_patterns)
        # The link and the files naming the deployed and previous slots live in the home itself.
        r.files[ctx.link] = frozenset({ALL})
        for name in (ctx.cfg.bot.deployed_slot_file, ctx.cfg.bot.previous_slot_file):
            r.files[ctx.home / name] = frozenset({"slot", "slot_config", "slot_state", "processes"})
        r.dirs.add(ctx.home)
        data = real_path(ctx.data)
        slot = ctx.slot.target

        def under_data(p: Path) -> Path:
            return data / p.relative_to(ctx.data)

        for path, checks in (
            (ctx.positions_path, STATE),
            (ctx.portfolio_path, STATE),
            (ctx.wal_path, frozenset({"wal"})),
            (ctx.stop_path, frozenset({"emergency_stop"})),
        ):
            real = under_data(path)
            r.files[real] = checks
            r.dirs.add(real.parent)
            r.lock_dirs.add(real.parent)
        r.heartbeats = under_data(ctx.heartbeats_dir)
        r.dirs |= {data, r.heartbeats, r.heartbeats.parent}
        r.lock_dirs |= {data, r.heartbeats}
        for rel in ctx.cfg.files.required_dirs:
            r.dirs.add((data / rel).parent)
        if ctx.cfg.trade_store.sqlite:
            db = data / ctx.cfg.trade_store.sqlite
            r.files[db] = frozenset({"trade_store"})
            r.dirs.add(db.parent)
        if slot is not None:
            for rel in (*ctx.cfg.slots.must_parse, *ctx.cfg.slots.must_match):
                r.files[slot / rel] = frozenset({"slot_config"})
                r.dirs.add((slot / rel).parent)
            r.files[slot / ctx.cfg.slots.requirements] = frozenset({"dependencies"})
        # guardian's own writes: its alert log and its backups say nothing new about the bot.
        alerts = under_data(ctx.alerts_path)
        r.ignored |= {alerts, rotate_lock_path(alerts)}
        r.ignored_dirs.add(under_data(ctx.backups_dir))
        return r

    def route(self, path: Path, *, is_dir: bool, kind: str = "") -> frozenset[str]:
        if path in self.ignored or path.parent in self.ignored_dirs or path in self.ignored_dirs:
            return frozenset()
        hit = self.files.get(path)
        if hit is not None:
            return hit
        name = path.name
        if name.endswith(".lock"):
            # A lock file appearing or going (a soft lock, or a stale one removed) is news; its being
            # opened and closed at every save of a flock-style bot is not, and reading /proc/locks
            # that often stalls (the kernel's RCU waits).
            if kind != "closed" and (path.parent in self.lock_dirs or path.parent == self.heartbeats):
                return frozenset({"locks"})
            return frozenset()
        if path.parent == self.heartbeats:
            return frozenset({"heartbeats"}) if name.endswith(".json") else frozenset()
        if any(fnmatch.fnmatch(name, pat) for pat in self.temp_patterns):
            # A temp file only matters once it is old: the sweep finds leftovers, saves cost nothing.
            return frozenset()
        if is_dir:
            return SHAPE
        return frozenset()


class Watcher(FileSystemEventHandler):
    """Collects the checks that events concern; the main loop takes them with :meth:`take`.

    The observer's thread does no work beyond routing: it marks checks due with the time of their
    first event and wakes the loop through a pipe, once per batch, so a burst never builds a backlog.
    """

    def __init__(self, wake_fd: int) -> None:
        self._wake_fd = wake_fd
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}
        self._woken = False
        self.router = Router()
        self.events = 0
        self._observer = Observer()
        self._watches: dict[Path, ObservedWatch] = {}

    def start(self) -> None:
        self._observer.daemon = True
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=1.0)

    def sync(self, router: Router) -> tuple[bool, list[str]]:
        """Watch what ``router`` asks for (the directories that exist), stop watching the rest.
        Return whether a watch was added (what changed in its directory before now was not seen)
        and the problems (a directory that could not be watched), for the status."""
        problems: list[str] = []
        before = set(self._watches)
        with self._lock:
            self.router = router
        want = {d for d in router.dirs if d.is_dir()}
        for d in set(self._watches) - want:
            with contextlib.suppress(KeyError, OSError):
                self._observer.unschedule(self._watches.pop(d))
        for d in sorted(want - set(self._watches)):
            try:
                self._watches[d] = self._observer.schedule(self, str(d), recursive=False, event_filter=EVENTS)
            except OSError as e:  # out of inotify watches, or the directory went away meanwhile
                problems.append(f"cannot watch {d}: {e.strerror or e}")
        return bool(set(self._watches) - before), problems

    @property
    def watched(self) -> list[Path]:
        return sorted(self._watches)

    def dispatch(self, event: FileSystemEvent) -> None:
        t = time.monotonic()
        router = self.router
        paths = [event.src_path, *([event.dest_path] if event.dest_path else [])]
        due: set[str] = set()
        for p in paths:
            due |= router.route(Path(os.fsdecode(p)), is_dir=event.is_directory, kind=event.event_type)
        if event.is_directory and event.event_type in ("created", "deleted", "moved"):
            due.add(ALL if any(Path(os.fsdecode(p)) in router.dirs for p in paths) else "directories")
        if not due:
            return
        with self._lock:
            self.events += 1
            for name in due:
                self._pending.setdefault(name, t)
            if self._woken:
                return
            self._woken = True
        with contextlib.suppress(BlockingIOError):  # a full pipe: the loop is awake anyway
            os.write(self._wake_fd, b"e")

    def take(self) -> dict[str, float]:
        """The checks events asked for since the last call, each with the time of its first event."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._woken = False
        return pending
