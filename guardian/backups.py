"""Nothing is lost: before guardian changes or removes a file, its exact bytes are kept here.

A backup's name says what, when and why: ``<path with / as __>.<UTC time>.<reason>.bak``; a
``manifest.jsonl`` beside them records the original path and checksum for ``backups restore``.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from guardian.fsutil import atomic_write, bot_lock, fsync_dir, read_regular

MANIFEST = "manifest.jsonl"
_NAME = re.compile(r"^(?P<orig>.+)\.(?P<ts>\d{8}T\d{6}\d*Z)(?:-\d+)?\.(?P<reason>[a-z0-9_-]+)\.bak$")


@dataclass(frozen=True)
class Backup:
    id: str  # the backup's file name
    original: str  # path relative to the data root
    reason: str
    ts: str
    size: int
    sha256: str | None = None


class BackupStore:
    def __init__(self, data_root: Path, backups_dir: Path) -> None:
        self.root = data_root
        self.dir = backups_dir

    def _name(self, original: str, reason: str, now: datetime) -> Path:
        stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        base = f"{original.replace('/', '__')}.{stamp}"
        candidate = self.dir / f"{base}.{reason}.bak"
        n = 1
        while os.path.lexists(candidate):
            candidate = self.dir / f"{base}-{n}.{reason}.bak"
            n += 1
        return candidate

    def keep(self, path: Path, reason: str, *, now: datetime | None = None, move: bool = False) -> Backup:
        """Keep the exact bytes of ``path`` before it is changed (or, with ``move``, take it away).

        The copy is durable before this returns. Raise OSError if it cannot be made: the caller must
        then not touch the original.
        """
        now = now or datetime.now(UTC)
        original = str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)
        self.dir.mkdir(parents=True, exist_ok=True)
        dest = self._name(original, reason, now)
        data = read_regular(path)
        if move:
            os.rename(path, dest)  # same directory tree: atomic, the bytes never leave the disk
            fsync_dir(dest.parent)
            fsync_dir(path.parent)
        else:
            atomic_write(dest, data, like=path.lstat())
        b = Backup(
            dest.name,
            original,
            reason,
            now.isoformat().replace("+00:00", "Z"),
            len(data),
            hashlib.sha256(data).hexdigest(),
        )
        self._record(b)
        return b

    def _record(self, b: Backup) -> None:
        fd = os.open(self.dir / MANIFEST, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, (json.dumps(asdict(b), sort_keys=True) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def list(self) -> list[Backup]:
        """Every backup present, oldest first (manifest entries, plus files named like backups)."""
        known: dict[str, Backup] = {}
        with contextlib.suppress(OSError):
            for line in (self.dir / MANIFEST).read_text().splitlines():
                with contextlib.suppress(ValueError, TypeError):
                    b = Backup(**json.loads(line))
                    known[b.id] = b
        try:
            names = {e.name: e for e in os.scandir(self.dir) if e.is_file(follow_symlinks=False)}
        except OSError:
            return []
        out = [b for b in known.values() if b.id in names]
        for name, e in names.items():
            m = _NAME.match(name)
            if name not in known and m:
                out.append(Backup(name, m["orig"].replace("__", "/"), m["reason"], m["ts"], e.stat().st_size))
        return sorted(out, key=lambda b: (b.ts, b.id))

    def newest_for(self, original: Path) -> builtins.list[Path]:
        """Backups that may hold ``original``'s content (guardian's or the bot's own), newest first."""
        rel = str(original.relative_to(self.root)) if original.is_relative_to(self.root) else original.name
        mine = rel.replace("/", "__")

        def holds(name: str) -> bool:
            # guardian's own backup names the exact file it kept: that of `<file>.lock` is not one of
            # `<file>`; anything else is the bot's own, named after the file.
            m = _NAME.match(name)
            return m["orig"] == mine if m else name.startswith((mine, original.stem))

        try:
            files = [
                Path(e.path)
                for e in os.scandir(self.dir)
                if e.is_file(follow_symlinks=False) and e.name != MANIFEST and holds(e.name)
            ]
        except OSError:
            return []
        return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)

    def restore(
        self, backup_id: str, *, lock_timeout: float, soft_lock: bool = False, now: datetime | None = None
    ) -> tuple[Backup, Backup | None]:
        """Put a backup's bytes back at its original path, keeping the current file first.

        Return (the backup restored, the backup of what it replaced). Raise KeyError for an unknown
        id, ValueError if the backup no longer matches its checksum.
        """
        b = next((x for x in self.list() if x.id == backup_id), None)
        if b is None or "/" in backup_id:
            raise KeyError(backup_id)
        data = read_regular(self.dir / b.id)
        if b.sha256 and hashlib.sha256(data).hexdigest() != b.sha256:
            raise ValueError(f"backup {b.id} does not match its recorded checksum")
        target = self.root / b.original
        with bot_lock(target, timeout=lock_timeout, soft=soft_lock):
            previous = self.keep(target, "pre-restore", now=now) if target.exists() else None
            atomic_write(target, data)
        return b, previous
