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
import stat
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import msgspec

from guardian.fsutil import (
    atomic_write,
    bot_lock,
    describe_kind,
    fsync_dir,
    lstat_or_none,
    pinned_dir,
    read_regular,
    unreadable_reason,
)

MANIFEST = "manifest.jsonl"
MANIFEST_MAX = 64 << 20  # ~200,000 entries; backups are never rotated, but heals are rare
_NAME = re.compile(r"^(?P<orig>.+)\.(?P<ts>\d{8}T\d{6}\d*Z)(?:-\d+)?\.(?P<reason>[a-z0-9_-]+)\.bak$")


@dataclass(frozen=True)
class Backup:
    id: str  # the backup's file name
    original: str  # path relative to the data root
    reason: str
    ts: str
    size: int
    sha256: str | None = None


_DECODER = msgspec.json.Decoder(Backup)


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
        original = str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)
        return self._keep(path, original, reason, now=now or datetime.now(UTC), move=move)

    def _keep(self, path: Path, original: str, reason: str, *, now: datetime, move: bool = False) -> Backup:
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
        return self.list_checked()[0]

    def list_checked(self) -> tuple[builtins.list[Backup], str | None]:
        """As :meth:`list`, with why the manifest could not be read (then its checksums are unknown)."""
        known, problem = self._manifest()
        return self._present(known), problem

    def _manifest(self) -> tuple[dict[str, Backup], str | None]:
        """The manifest's entries by id. The bot's user can write it: each line is decoded typed, and
        one that is not an entry is skipped; the file itself is read with the hardened reader."""
        path = self.dir / MANIFEST
        try:
            raw = read_regular(path, max_bytes=MANIFEST_MAX)
        except (FileNotFoundError, NotADirectoryError):
            return {}, None
        except OSError as e:
            return {}, f"{path} cannot be read ({unreadable_reason(e)})"
        known: dict[str, Backup] = {}
        for line in raw.splitlines():
            with contextlib.suppress(msgspec.DecodeError, RecursionError):
                b = _DECODER.decode(line)
                known[b.id] = b
        return known, None

    def _present(self, known: dict[str, Backup]) -> builtins.list[Backup]:
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

        The bot's user can write the backups folder and its manifest while the operator restoring
        may be root: the entry's path must lie inside the data root, and is written there through
        the directory opened and checked, never re-looked-up by name. Return (the backup restored,
        the backup of what it replaced). Raise KeyError for an unknown id; RestoreRefused (a
        ValueError) before anything is written when the id or the entry would read or write outside
        the backups folder or the data root; ValueError if the backup no longer matches its checksum.
        """
        if not backup_id or "/" in backup_id or "\0" in backup_id or backup_id in (".", "..", MANIFEST):
            raise RestoreRefused(f"{backup_id!r} is not the name of a backup file in {self.dir}")
        try:
            root = self.root.resolve(strict=True)
        except (OSError, RuntimeError) as e:
            raise RestoreRefused(f"the data root {self.root} cannot be resolved ({e})") from None
        with contextlib.ExitStack() as pins:
            store = self._pinned(pins, root)
            st = lstat_or_none(store.dir / backup_id)
            if st is not None and not stat.S_ISREG(st.st_mode):
                raise RestoreRefused(f"backup {backup_id} is {describe_kind(st.st_mode)}, not a backup file")
            b = next((x for x in store.list() if x.id == backup_id), None)
            if b is None:
                raise KeyError(backup_id)
            target = _target(pins, root, b)
            try:
                data = read_regular(store.dir / b.id)
            except FileNotFoundError:
                raise KeyError(backup_id) from None
            except OSError as e:
                raise RestoreRefused(f"backup {b.id} {unreadable_reason(e)}, not a backup file") from None
            if b.sha256 and hashlib.sha256(data).hexdigest() != b.sha256:
                raise ValueError(f"backup {b.id} does not match its recorded checksum")
            with bot_lock(target, timeout=lock_timeout, soft=soft_lock):
                previous = (
                    store._keep(target, b.original, "pre-restore", now=now or datetime.now(UTC))
                    if os.path.lexists(target)
                    else None
                )
                atomic_write(target, data)
        return b, previous

    def _pinned(self, pins: contextlib.ExitStack, root: Path) -> BackupStore:
        """This store, its folder reached through an open fd (held by ``pins``) checked to lie in the data root."""
        where, real = _pin(pins, self.dir, "the backups folder")
        if self.dir.is_relative_to(self.root) and not real.is_relative_to(root):
            raise RestoreRefused(f"the backups folder {self.dir} resolves to {real}, outside the data root {root}")
        return BackupStore(root, where)


class RestoreRefused(ValueError):
    """A restore that would read or write outside the backups folder or the data root."""


def _inside_path(b: Backup) -> PurePosixPath:
    """The entry's path relative to the data root, refusing one that could leave it by its spelling."""
    original = b.original
    if not original or "\0" in original:
        raise RestoreRefused(f"backup {b.id} records no usable path ({original!r})")
    rel = PurePosixPath(original)
    if rel.is_absolute():
        raise RestoreRefused(
            f"backup {b.id} is of {original}, an absolute path: restore writes only inside the data root"
        )
    if ".." in rel.parts:
        raise RestoreRefused(
            f"backup {b.id} is of {original}, which climbs out with '..': restore writes only inside the data root"
        )
    if rel.name in ("", "."):
        raise RestoreRefused(f"backup {b.id} records no file name ({original!r})")
    return rel


def _target(pins: contextlib.ExitStack, root: Path, b: Backup) -> Path:
    """Where ``b`` is restored to, reached through its directory's open fd (held by ``pins``): inside
    the data root, and a regular file if anything is there."""
    rel = _inside_path(b)
    where, real = _pin(pins, root / rel.parent, f"the directory of {b.original}")
    if not real.is_relative_to(root):
        raise RestoreRefused(
            f"backup {b.id} is of {b.original}, which resolves to {real / rel.name}, outside the data root {root}"
        )
    target = where / rel.name
    st = lstat_or_none(target)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise RestoreRefused(f"{b.original} is {describe_kind(st.st_mode)}; restore does not replace it")
    return target


def _pin(pins: contextlib.ExitStack, directory: Path, what: str) -> tuple[Path, Path]:
    try:
        return pins.enter_context(pinned_dir(directory))
    except OSError as e:
        raise RestoreRefused(f"{what} ({directory}) cannot be opened: {unreadable_reason(e)}") from None
