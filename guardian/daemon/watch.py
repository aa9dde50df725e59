"""inotify (through watchdog's libc bindings): which directories to watch, which checks an event
concerns, and a hand-off to the main loop that coalesces bursts.

Only the events that mean a file changed as a whole are asked for (created, closed after a write,
moved, deleted): a bot rewriting its positions a hundred times a second costs one event per save,
not one per ``write()``. Directories are watched one by one, never recursively: the bot's data,
feature store and backups change all day and say nothing about its health.
"""

from __future__ import annotations

import ctypes
import fnmatch
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.observers.inotify_c import InotifyConstants as IN
from watchdog.observers.inotify_c import WatchDescriptor, inotify_add_watch, inotify_init, inotify_rm_watch

from guardian.alerts.jsonl import rotate_lock_path
from guardian.context import Context

# A file changed as a whole: created, closed after a write, moved in or out, deleted; and a watched
# directory itself going away. Not IN_MODIFY: that is one event per write() of a save.
MASK = (
    IN.IN_CREATE | IN.IN_CLOSE_WRITE | IN.IN_MOVED_FROM | IN.IN_MOVED_TO | IN.IN_DELETE
    | IN.IN_DELETE_SELF | IN.IN_MOVE_SELF | IN.IN_ONLYDIR
)  # fmt: skip
GONE = IN.IN_Q_OVERFLOW | IN.IN_IGNORED | IN.IN_DELETE_SELF | IN.IN_MOVE_SELF  # look at everything again
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of name
BUFFER = 64 * 1024
MAX_EVENT = 16 + 256  # the header and the longest name (NAME_MAX and its NUL)
ROUTES_MAX = 4096  # routes remembered (a bot naming each temp file anew would grow them without end)

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


class Watcher:
    """Reads inotify in the main loop (select on :meth:`fileno`, then :meth:`read`) and collects the
    checks that events concern; the loop takes them with :meth:`take`.

    No thread: watchdog's Observer hands every event through two threads and a queue, which cost a
    tenth of a core at a few hundred events a second; here one read() takes a whole batch, routing
    an event is a dict lookup, and a burst only ever marks a check due once.
    """

    def __init__(self) -> None:
        fd = inotify_init()
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init: {os.strerror(err)}")
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)
        self._fd = fd
        self._pending: dict[str, float] = {}
        self.router = Router()
        self.events = 0
        self._wds: dict[WatchDescriptor, Path] = {}
        # (watch, name, closed/dir bits) -> the checks: a busy bot saves the same few names all day,
        # and building and hashing a Path for each of its events would cost more than the rest.
        self._routes: dict[tuple[int, bytes, int], frozenset[str]] = {}
        self._watches: dict[Path, WatchDescriptor] = {}

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        os.close(self._fd)

    def sync(self, router: Router) -> tuple[bool, list[str]]:
        """Watch what ``router`` asks for (the directories that exist), stop watching the rest.
        Return whether a watch was added (what changed in its directory before now was not seen)
        and the problems (a directory that could not be watched), for the status."""
        problems: list[str] = []
        self.router = router
        self._routes.clear()
        want = {d for d in router.dirs if d.is_dir()}
        added = False
        for d in set(self._watches) - want:
            wd = self._watches.pop(d)
            others = [o for o, w in self._watches.items() if w == wd]
            if others:  # two paths to one directory share its watch: keep it for the other
                self._wds[wd] = others[0]
            elif self._wds.pop(wd, None) is not None:
                inotify_rm_watch(self._fd, wd)  # fails only if the kernel dropped it already: nothing to do
        for d in sorted(want - set(self._watches)):
            wd = inotify_add_watch(self._fd, os.fsencode(d), MASK)
            if wd < 0:  # out of inotify watches, or the directory went away meanwhile
                problems.append(f"cannot watch {d}: {os.strerror(ctypes.get_errno())}")
                continue
            self._watches[d] = wd
            self._wds.setdefault(wd, d)
            added = True
        return added, problems

    @property
    def watched(self) -> list[Path]:
        return sorted(self._watches)

    def read(self) -> bool:
        """Route every event queued on the inotify fd; True if one concerned a check."""
        t = time.monotonic()
        routes = self._routes
        due: set[str] = set()
        end = BUFFER
        while end > BUFFER - MAX_EVENT:  # a read that left room for another event emptied the queue
            try:
                buf = os.read(self._fd, BUFFER)
            except BlockingIOError:
                break
            i, end = 0, len(buf)
            while i + 16 <= end:
                raw_wd, mask, _cookie, length = _HEADER.unpack_from(buf, i)
                wd = WatchDescriptor(raw_wd)
                name = buf[i + 16 : i + 16 + length].rstrip(b"\0")
                i += 16 + length
                parent = self._wds.get(wd)
                if mask & GONE:
                    # Events were lost, or a watched directory went (not one sync() let go of): look at
                    # everything again, which watches whatever now stands at the path.
                    if parent is not None or mask & IN.IN_Q_OVERFLOW:
                        if mask & (IN.IN_DELETE_SELF | IN.IN_MOVE_SELF):
                            inotify_rm_watch(self._fd, wd)  # a moved directory would be followed elsewhere
                        if parent is not None:
                            self._forget(wd)
                        self.events += 1
                        due.add(ALL)
                    continue
                if parent is None or not name:
                    continue
                key = (wd, name, mask & (IN.IN_ISDIR | IN.IN_CLOSE_WRITE))
                hit = routes.get(key)
                if hit is None:
                    if len(routes) >= ROUTES_MAX:
                        routes.clear()
                    hit = routes[key] = self._route(parent / os.fsdecode(name), mask)
                if hit:
                    self.events += 1
                    due |= hit
        for check in due:
            self._pending.setdefault(check, t)
        return bool(due)

    def _route(self, path: Path, mask: int) -> frozenset[str]:
        is_dir = bool(mask & IN.IN_ISDIR)
        hit = self.router.route(path, is_dir=is_dir, kind="closed" if mask & IN.IN_CLOSE_WRITE else "changed")
        if is_dir:
            hit = hit | {ALL if path in self.router.dirs else "directories"}
        return hit

    def _forget(self, wd: WatchDescriptor) -> None:
        self._routes.clear()
        self._wds.pop(wd, None)
        for path in [p for p, w in self._watches.items() if w == wd]:
            del self._watches[path]

    def take(self) -> dict[str, float]:
        """The checks events asked for since the last call, each with the time of its first event."""
        pending, self._pending = self._pending, {}
        return pending
