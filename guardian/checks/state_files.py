"""The data root's shape: required directories, the state files, temp files left by failed saves,
whether the bot can write its state, and free disk."""

from __future__ import annotations

import fnmatch
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from guardian.checks.base import ago, unknown
from guardian.context import Context
from guardian.fsutil import describe_kind, lstat_or_none
from guardian.model import Fact, Finding, Level
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


def _bot_identity(ctx: Context) -> tuple[int, set[int]]:
    """The bot's uid and groups: the owner of the data root (guardian may run as root)."""
    import pwd

    st = ctx.data.stat()
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


def check_writable(ctx: Context) -> Iterator[Finding]:
    try:
        uid, groups = _bot_identity(ctx)
        readonly = bool(os.statvfs(ctx.data).f_flag & os.ST_RDONLY)
    except OSError:
        return  # the data root itself is reported by the directory check
    if readonly:
        yield Finding(
            "STATE_NOT_WRITABLE",
            Level.HIGH,
            ctx.rel(ctx.data),
            f"the filesystem of {ctx.data} is read-only",
            action="remount it read-write; the bot cannot save its positions",
        )
        return
    for p in (ctx.positions_path, ctx.portfolio_path, ctx.wal_path):
        for target in (p.parent, p):
            st = lstat_or_none(target)
            if st is None or stat.S_ISLNK(st.st_mode):
                continue
            if not can_write(st, uid, groups):
                yield Finding(
                    "STATE_NOT_WRITABLE",
                    Level.HIGH,
                    ctx.rel(target),
                    f"{ctx.rel(target)} is not writable by the bot's user (uid {uid}); its saves will fail",
                    action=f"chown/chmod {target} so uid {uid} can write it",
                    context={"uid": uid, "mode": oct(st.st_mode & 0o7777)},
                )


def check_disk(ctx: Context) -> Iterator[Finding]:
    try:
        usage = shutil.disk_usage(ctx.data)
    except OSError:
        return
    need = max(ctx.cfg.thresholds.disk_min_free_mb * 1024 * 1024, 2 * ctx.positions[0].size)
    if usage.free < need:
        yield Finding(
            "DISK_LOW",
            Level.HIGH,
            ctx.rel(ctx.data),
            f"{usage.free // (1 << 20)} MiB free where {ctx.data} lives; an atomic save of the positions needs "
            f"{need // (1 << 20)} MiB",
            action="free disk space",
            context={"free_mb": usage.free // (1 << 20)},
        )
