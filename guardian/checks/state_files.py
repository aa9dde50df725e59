"""The data root's shape: required directories, the state files, temp files left by failed saves,
whether the bot can write its state, and free disk."""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from guardian.checks.base import ago, unknown
from guardian.context import Context
from guardian.fsinfo import FS_APPEND_FL, FS_IMMUTABLE_FL, Volume, inode_flags, mount_of, nearest_existing, volume
from guardian.fsutil import describe_kind, lstat_or_none
from guardian.model import Fact, Finding, Level, Proof
from guardian.state import FileState, Loaded


def required_dirs(ctx: Context) -> list[Path]:
    """The configured directories plus the parents of every state file, parents first."""
    rels = set(ctx.cfg.files.required_dirs)
    for p in (ctx.positions_path, ctx.portfolio_path, ctx.wal_path, ctx.stop_path, ctx.heartbeats_dir / "x"):
        rels.add(str(p.parent.relative_to(ctx.data)))
    rels.discard(".")
    return sorted((ctx.data / r for r in rels), key=lambda p: (len(p.parts), str(p)))


def check_directories(ctx: Context) -> Iterator[Finding]:
    for d in required_dirs(ctx):
        if d.is_dir():
            continue
        if os.path.lexists(d):
            yield unknown(
                ctx.rel(d), f"{ctx.rel(d)} should be a directory but is {describe_kind(d.lstat().st_mode)}", Level.HIGH
            )
            continue
        yield Finding(
            "DIRECTORY_MISSING", Level.MEDIUM, ctx.rel(d), f"directory {ctx.rel(d)} is missing", recoverable=True
        )


_STATE_CODES = {
    FileState.MISSING: ("STATE_FILE_MISSING", Level.MEDIUM),
    FileState.EMPTY: ("STATE_FILE_EMPTY", Level.MEDIUM),
    FileState.CORRUPT: ("STATE_FILE_CORRUPT", Level.HIGH),
    FileState.MALFORMED: ("STATE_FILE_MALFORMED", Level.HIGH),
}


def state_finding(ctx: Context, loaded: Loaded) -> Finding | None:
    """The finding for one state file's condition, or None when it is sound."""
    subject = ctx.rel(loaded.path)
    concern = Fact.POSITIONS if loaded.path == ctx.positions_path else Fact.PORTFOLIO
    if loaded.state is FileState.OK:
        return None
    if loaded.state is FileState.UNREADABLE:
        return unknown(subject, f"cannot read {subject}: it {loaded.detail}; its contents are unknown", concern=concern)
    code, level = _STATE_CODES[loaded.state]
    return Finding(
        code,
        level,
        subject,
        f"{subject} {loaded.detail}",
        recoverable=True,
        context={"missing_keys": ",".join(loaded.missing_keys)} if loaded.missing_keys else {},
        concern=concern,
    )


def check_state_files(ctx: Context) -> Iterator[Finding]:
    for loaded in (ctx.positions[0], ctx.portfolio):
        f = state_finding(ctx, loaded)
        if f:
            yield f


def state_file_paths(ctx: Context) -> set[Path]:
    return {ctx.positions_path, ctx.portfolio_path, ctx.wal_path, ctx.stop_path, ctx.alerts_path}


def temp_leftovers(ctx: Context) -> Iterator[tuple[Path, float]]:
    """Temp files (by name) in the state directories, with their age in seconds."""
    known = state_file_paths(ctx)
    dirs = {p.parent for p in known} | {ctx.heartbeats_dir}
    now = ctx.now.timestamp()
    for d in sorted(dirs):
        try:
            entries = list(os.scandir(d))
        except OSError:
            continue
        for e in entries:
            p = Path(e.path)
            if (
                p in known
                or e.name.endswith(".lock")
                or not any(fnmatch.fnmatch(e.name, pat) for pat in ctx.cfg.files.temp_patterns)
            ):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield p, now - st.st_mtime


def check_temp_files(ctx: Context) -> Iterator[Finding]:
    for p, age in temp_leftovers(ctx):
        if age >= ctx.cfg.thresholds.temp_file_age:
            yield Finding(
                "TEMP_FILE_LEFTOVER",
                Level.LOW,
                ctx.rel(p),
                f"{ctx.rel(p)} looks like a temp file left by a failed save ({ago(age)} old)",
                recoverable=True,
                context={"age_s": round(age)},
            )


# --- can the bot save? Every filesystem it (or guardian) writes to --------------------------------

MIB = 1 << 20


@dataclass(frozen=True)
class Written:
    """Something the bot or guardian saves: a file, or the files of a directory (``pattern``)."""

    path: Path
    dir: Path
    pattern: str | None  # the files of ``dir`` (heartbeats, backups) rather than one file
    appended: bool  # only ever appended to (the WAL): append-only (chattr +a) does not stop it
    by_guardian: bool

    @property
    def file(self) -> Path | None:
        return None if self.pattern else self.path

    def label(self, ctx: Context) -> str:
        """As an operator reads it (only for a finding: ``ctx.rel`` is not free)."""
        return f"{ctx.rel(self.dir)}/{self.pattern}" if self.pattern else ctx.rel(self.path)


def written(ctx: Context) -> list[Written]:
    def file(p: Path, *, appended: bool = False, by_guardian: bool = False) -> Written:
        return Written(p, p.parent, None, appended, by_guardian)

    def files_in(d: Path, pattern: str, *, by_guardian: bool = False) -> Written:
        return Written(d, d, pattern, False, by_guardian)

    return [
        file(ctx.positions_path),
        file(ctx.portfolio_path),
        file(ctx.wal_path, appended=True),
        file(ctx.stop_path),
        files_in(ctx.heartbeats_dir, "*.json"),
        files_in(ctx.backups_dir, "*", by_guardian=True),
        file(ctx.alerts_path, by_guardian=True),  # rotated by renaming, so not appended only
    ]


def written_dirs(ctx: Context, items: Iterable[Written]) -> list[Path]:
    """The data root (where missing directories get created), then every directory written, shallowest first."""
    dirs = {ctx.data} | {w.dir for w in items}
    return sorted(dirs, key=lambda p: (p != ctx.data, len(p.parts), str(p)))


@dataclass(frozen=True)
class Filesystem:
    """One filesystem as mounted, and the written directories on it (shallowest first)."""

    volume: Volume
    dirs: tuple[Path, ...]
    probed: tuple[Path, ...]  # the existing directories that stand for them (themselves or a parent)


@dataclass(frozen=True)
class Unprobed:
    """A path that could not be stat'ed (or statvfs'ed), and the written directories it stands for."""

    path: Path
    dirs: tuple[Path, ...]
    error: OSError


@dataclass(frozen=True)
class Layout:
    written: tuple[Written, ...]
    filesystems: tuple[Filesystem, ...]
    unprobed: tuple[Unprobed, ...]
    root_error: OSError | None  # the data root itself cannot be probed: nothing below it can
    probed_of: Mapping[Path, Path]  # a written directory -> the existing directory it is judged by
    saved_in: Mapping[Path, tuple[Written, ...]]  # an existing directory probed -> what is saved in it


def probe_layout(ctx: Context) -> Layout:
    """Where each written directory lives: one stat per directory, one statvfs per existing one.

    Grouped by device and read-only flag, not by device alone: a read-only bind mount of ``logs/``
    onto itself shares its device with the rest of the tree. Probed once per evaluation, for both
    the writable and the disk check.
    """
    cached = ctx.memo.get("filesystems")
    if isinstance(cached, Layout):
        return cached
    probed_of: dict[Path, Path] = {}
    volumes: dict[Path, tuple[int, Volume]] = {}
    failed: dict[Path, tuple[OSError, list[Path]]] = {}
    root_error: OSError | None = None
    items = tuple(written(ctx))
    for d in written_dirs(ctx, items):
        try:
            probed, st = nearest_existing(d)
            if probed not in volumes:
                volumes[probed] = (st.st_dev, volume(probed))
        except OSError as e:
            if d == ctx.data:
                root_error = e
                break
            where = Path(e.filename) if isinstance(e.filename, str) else d
            failed.setdefault(where, (e, []))[1].append(d)
            continue
        probed_of[d] = probed
    groups: dict[tuple[int, bool], tuple[Volume, list[Path], list[Path]]] = {}
    for d, probed in probed_of.items():
        dev, vol = volumes[probed]
        _, dirs, probes = groups.setdefault((dev, vol.readonly), (vol, [], []))
        dirs.append(d)
        if probed not in probes:
            probes.append(probed)
    saved_in: dict[Path, list[Written]] = {}
    for w in items:
        if w.dir in probed_of:
            saved_in.setdefault(probed_of[w.dir], []).append(w)
    found = Layout(
        written=items,
        filesystems=tuple(Filesystem(v, tuple(ds), tuple(ps)) for v, ds, ps in groups.values()),
        unprobed=tuple(Unprobed(p, tuple(ds), e) for p, (e, ds) in failed.items()),
        root_error=root_error,
        probed_of=probed_of,
        saved_in={p: tuple(ws) for p, ws in saved_in.items()},
    )
    ctx.memo["filesystems"] = found
    return found


def _where(ctx: Context, fs: Filesystem) -> tuple[str, dict[str, Any]]:
    """How a finding names a filesystem: ``logs (/mnt/logs, tmpfs)``, and its context. The mount
    table is read only here, when there is something to report."""
    name = _named(ctx, fs.dirs[0])
    context: dict[str, Any] = {"dirs": ",".join(ctx.rel(d) for d in fs.dirs)}
    mount = mount_of(fs.probed[0])
    if mount is None:
        return name, context
    context |= {"mount": mount.point, "fs": mount.fstype}
    return f"{name} ({mount.point}, {mount.fstype})", context


def _named(ctx: Context, d: Path) -> str:
    return "the data root" if d == ctx.data else ctx.rel(d)


def _what_stops(ctx: Context, lay: Layout, dirs: Iterable[Path], *, none: str) -> str:
    """What cannot be saved in ``dirs``: ``the bot cannot save A, B; guardian cannot write C``."""
    on = set(dirs)
    items = [w for w in lay.written if w.dir in on]
    parts = []
    bot = [w.label(ctx) for w in items if not w.by_guardian]
    ours = [w.label(ctx) for w in items if w.by_guardian]
    if bot:
        parts.append("the bot cannot save " + ", ".join(bot))
    if ours:
        parts.append("guardian cannot write " + ", ".join(ours))
    return "; ".join(parts) or none


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _error_context(e: OSError) -> dict[str, Any]:
    return {"error": errno.errorcode.get(e.errno, str(e.errno))} if e.errno else {}


def _not_proven(subject: str, message: str, error: OSError, *, action: str, **context: Any) -> Finding:
    f = unknown(subject, message, Level.HIGH, **context, **_error_context(error))
    return replace(f, action=f"{action}, then re-run `guardian check`")


def _unprobed(ctx: Context, lay: Layout) -> Iterator[Finding]:
    for what in lay.unprobed:
        if what.path in required_dirs(ctx) and os.path.lexists(what.path) and not what.path.is_dir():
            continue  # the directory check reports what stands in this directory's place
        subject = ctx.rel(what.path)
        on = ", ".join(ctx.rel(d) for d in what.dirs)
        yield _not_proven(
            subject,
            f"cannot stat {subject} ({_why(what.error)}): whether the bot can save in {on} is not proven",
            what.error,
            action=f"make {what.path} reachable by guardian's user",
            dirs=",".join(ctx.rel(d) for d in what.dirs),
        )


def _bot_identity(ctx: Context) -> tuple[int, set[int]] | None:
    """The bot's uid and groups: the owner of the data root (guardian may run as root); None while
    the data root does not exist."""
    import pwd

    try:
        st = ctx.data.stat()
    except OSError:
        return None
    try:
        pw = pwd.getpwuid(st.st_uid)
        groups = set(os.getgrouplist(pw.pw_name, pw.pw_gid))
    except KeyError:
        groups = {st.st_gid}
    return st.st_uid, groups


def can_write(st: os.stat_result, uid: int, groups: set[int]) -> bool:
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IWUSR)
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IWGRP)
    return bool(st.st_mode & stat.S_IWOTH)


@dataclass
class _Problems:
    """What stops the saves of one file or directory; one finding however many there are."""

    sentences: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)


def _mode_problem(ctx: Context, target: Path, identity: tuple[int, set[int]] | None, into: _Problems) -> None:
    if identity is None:
        return
    uid, groups = identity
    try:
        st = lstat_or_none(target)
    except OSError:
        return  # cannot be reached: probed (and reported) with its directory
    if st is None or stat.S_ISLNK(st.st_mode) or can_write(st, uid, groups):
        return
    into.sentences.append(f"{ctx.rel(target)} is not writable by the bot's user (uid {uid}); its saves will fail")
    into.actions.append(f"chown/chmod {target} so uid {uid} can write it")
    into.context |= {"uid": uid, "mode": oct(st.st_mode & 0o7777)}


def _flag_problem(
    ctx: Context, target: Path, flags: int, *, is_dir: bool, saved: Sequence[Written], appended: bool
) -> _Problems:
    rel = ctx.rel(target)
    found = _Problems()
    saves = f"every save of {', '.join(w.label(ctx) for w in saved)}"
    if flags & FS_IMMUTABLE_FL:
        if is_dir:
            found.sentences.append(
                f"{rel} is immutable (chattr +i): no file can be created, renamed or removed in it, so {saves} fails"
            )
        else:
            found.sentences.append(
                f"{rel} is immutable (chattr +i): it cannot be written or replaced, so every save of it fails"
            )
        found.actions.append(f"chattr -i {target}")
    if flags & FS_APPEND_FL and not appended:
        if is_dir:
            found.sentences.append(
                f"{rel} is append-only (chattr +a): no file can be renamed or removed in it, so {saves} fails"
            )
        else:
            found.sentences.append(
                f"{rel} is append-only (chattr +a): it cannot be replaced, so every save of it fails"
            )
        found.actions.append(f"chattr -a {target}")
    if found.sentences:
        names = [n for bit, n in ((FS_IMMUTABLE_FL, "immutable"), (FS_APPEND_FL, "append-only")) if flags & bit]
        found.context["flags"] = ",".join(names)
    return found


def _targets(lay: Layout) -> Iterator[tuple[Path, bool, Sequence[Written], bool]]:
    """Every existing file and directory whose flags decide whether a save works, on writable
    filesystems: (path, is a directory, what is saved in it, only appended to)."""
    for fs in lay.filesystems:
        if fs.volume.readonly:
            continue  # reported once for the whole filesystem
        for probed in fs.probed:
            inside = lay.saved_in.get(probed, ())
            if not inside:
                continue  # nothing is saved in it (the data root while its directories exist)
            yield probed, True, inside, all(w.appended for w in inside)
            for w in inside:
                if w.file is not None and w.dir == probed:
                    yield w.file, False, (w,), w.appended


def _unwritable(ctx: Context, lay: Layout) -> Iterator[Finding]:
    identity = _bot_identity(ctx)
    mode_checked = {p for f in (ctx.positions_path, ctx.portfolio_path, ctx.wal_path) for p in (f, f.parent)}
    for target, is_dir, saved, appended in _targets(lay):
        problems = _Problems()
        if target in mode_checked:
            _mode_problem(ctx, target, identity, problems)
        try:
            flags = inode_flags(target, follow=is_dir)
        except OSError as e:
            if is_dir and not problems.sentences:
                rel = ctx.rel(target)
                yield _not_proven(
                    rel,
                    f"cannot read the attributes (chattr flags) of {rel} ({_why(e)}): "
                    "whether the bot can save in it is not proven",
                    e,
                    action=f"let guardian's user open {target} for reading",
                )
            # A file guardian cannot open is reported as unreadable by the check that reads it.
            flags = None
        if flags is not None and flags & (FS_IMMUTABLE_FL | FS_APPEND_FL):
            more = _flag_problem(ctx, target, flags, is_dir=is_dir, saved=saved, appended=appended)
            problems.sentences += more.sentences
            problems.actions += more.actions
            problems.context |= more.context
        if problems.sentences:
            yield Finding(
                "STATE_NOT_WRITABLE",
                Level.HIGH,
                ctx.rel(target),
                "; ".join(problems.sentences),
                action="; ".join(problems.actions),
                context=problems.context,
            )


def check_writable(ctx: Context) -> Iterator[Finding | Proof]:
    """STATE_NOT_WRITABLE for each read-only filesystem the bot saves to, and for each state file or
    directory its user cannot write or that is immutable or append-only; UNKNOWN where that cannot
    be probed. Proves WRITABLE when there is none: a bot that cannot save its positions must not trade."""
    found = [replace(f, concern=Fact.WRITABLE) for f in _writable(ctx)]
    yield from found
    if not found:
        yield Proof(Fact.WRITABLE, "every state file and directory the bot and guardian write is writable")


def _writable(ctx: Context) -> Iterator[Finding]:
    lay = probe_layout(ctx)
    if lay.root_error is not None:
        e = lay.root_error
        yield _not_proven(
            "data root",
            f"cannot stat the data root {ctx.data} ({_why(e)}): whether the bot can save its state is not proven",
            e,
            action=f"make {ctx.data} reachable by guardian's user",
        )
        return
    yield from _unprobed(ctx, lay)
    for fs in lay.filesystems:
        if not fs.volume.readonly:
            continue
        where, context = _where(ctx, fs)
        yield Finding(
            "STATE_NOT_WRITABLE",
            Level.HIGH,
            ctx.rel(fs.dirs[0]),
            f"the filesystem of {where} is read-only: "
            + _what_stops(ctx, lay, fs.dirs, none=f"nothing can be created in {_named(ctx, fs.dirs[0])}"),
            action=f"remount {context.get('mount', 'it')} read-write",
            context=context,
        )
    yield from _unwritable(ctx, lay)


def check_disk(ctx: Context) -> Iterator[Finding | Proof]:
    """DISK_LOW for each filesystem the bot saves to with less free space than it needs, or no free
    inode (an atomic save creates a temp file). A directory that cannot be probed is reported by the
    writable check. Proves DISK_SPACE when every filesystem was probed and none is short."""
    lay = probe_layout(ctx)
    if lay.root_error is not None or lay.unprobed:
        return  # the writable check says what could not be probed; nothing is proven
    found = [replace(f, concern=Fact.DISK_SPACE) for f in _short(ctx, lay)]
    yield from found
    if not found:
        yield Proof(
            Fact.DISK_SPACE,
            f"{len(lay.filesystems)} filesystem(s) the bot saves to have the space and inodes a save needs",
        )


def _short(ctx: Context, lay: Layout) -> Iterator[Finding]:
    floor = ctx.cfg.thresholds.disk_min_free_mb * MIB
    positions = lay.probed_of.get(ctx.positions_path.parent)
    copy = 2 * ctx.positions[0].size  # an atomic save writes a whole second copy beside the first
    for fs in lay.filesystems:
        vol = fs.volume
        holds_positions = positions in fs.probed
        need = max(floor, copy) if holds_positions else floor
        low = vol.counts_space and vol.free < need
        if not (low or vol.out_of_inodes):
            continue
        where, context = _where(ctx, fs)
        need_mb = -(-need // MIB)
        if holds_positions and copy > floor:
            why = f"an atomic save of {ctx.rel(ctx.positions_path)} needs (twice its size)"
        else:
            why = "kept free (thresholds.disk_min_free_mb)"
        said = [f"{vol.free // MIB} MiB free, below the {need_mb} MiB {why}"] if low else []
        if vol.out_of_inodes:
            stops = _what_stops(ctx, lay, fs.dirs, none=f"nothing can be created in {_named(ctx, fs.dirs[0])}")
            said.append(f"no free inode: a save creates its temp file first, so {stops}")
        context |= {"free_mb": vol.free // MIB, "need_mb": need_mb}
        if vol.out_of_inodes:
            context["free_inodes"] = 0
        yield Finding(
            "DISK_LOW",
            Level.HIGH,
            ctx.rel(fs.dirs[0]),
            f"the filesystem of {where} has " + ", and ".join(said),
            action=f"free space{' and inodes' if vol.out_of_inodes else ''} on {context.get('mount', where)}",
            context=context,
        )
