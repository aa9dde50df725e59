"""Where a SQLite trade store is configured: its closed positions against the JSON file's."""

from __future__ import annotations

from collections.abc import Iterator

from guardian.checks.base import unknown
from guardian.context import Context
from guardian.fsutil import stat_regular, unreadable_reason
from guardian.model import Finding, Level
from guardian.state import load_closed_ids


def check(ctx: Context) -> Iterator[Finding]:
    rel = ctx.cfg.trade_store.sqlite
    if rel is None:
        return
    import sqlite3  # only where a store is configured: keeps the gate's imports to what it uses

    db = ctx.data / rel
    subject = ctx.rel(db)
    try:
        stat_regular(db)  # SQLite's own open would block on a FIFO (the gate would hang) and follow a symlink
    except OSError as e:
        yield unknown(subject, f"cannot read the trade store ({unreadable_reason(e)})", Level.HIGH)
        return
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=2)
        try:
            in_db = {str(row[0]) for row in con.execute(ctx.cfg.trade_store.query)}
        finally:
            con.close()
    except sqlite3.Error as e:
        yield unknown(subject, f"cannot read the trade store: {e}", Level.HIGH)
        return
    in_json = load_closed_ids(ctx.positions_path, max_bytes=ctx.max_bytes)
    if in_json is None:
        return  # the state-file check reports the positions file
    only_db, only_json = in_db - in_json, in_json - in_db
    if only_db or only_json:
        sample = ", ".join(sorted(only_json)[:3] + sorted(only_db)[:3])
        yield Finding(
            "SQLITE_JSON_DIVERGED",
            Level.CRITICAL,
            subject,
            f"closed positions differ: {len(only_json)} only in the JSON file, {len(only_db)} only in {subject} (e.g. {sample})",
            action="re-sync the trade store from the positions file",
            context={"only_json": len(only_json), "only_sqlite": len(only_db)},
        )
