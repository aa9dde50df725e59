"""The bot's write-ahead log: an operation left pending, in progress or failed is a mid-trade crash.
Proves WAL once every line was read and every operation in it is terminal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from guardian.checks.base import unknown
from guardian.context import Context
from guardian.fsutil import NotRegularFile, TooLarge, read_regular
from guardian.model import Fact, Finding, Level, Proof
from guardian.state import decode_any

UNFINISHED = {"pending", "in_progress", "failed"}
FINISHED = {"completed", "rolled_back"}


class _Entry(msgspec.Struct):
    id: Any = None
    status: Any = None
    op: Any = None
    ts: Any = None


def _decode_entry(decoder: msgspec.json.Decoder[_Entry], line: bytes) -> _Entry:
    try:
        return decoder.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):  # perhaps a NaN in its data, as Python's json writes it
        return msgspec.convert(decode_any(line), _Entry)


def check(ctx: Context) -> Iterator[Finding | Proof]:
    subject = ctx.rel(ctx.wal_path)
    try:
        raw = read_regular(ctx.wal_path, max_bytes=ctx.max_bytes)
    except FileNotFoundError:
        yield Proof(Fact.WAL, f"no {subject}: no operation was ever logged")
        return
    except (NotRegularFile, TooLarge, PermissionError) as e:
        yield unknown(
            subject,
            f"cannot read the WAL: it {e.strerror or e}; unfinished trades cannot be ruled out",
            concern=Fact.WAL,
        )
        return
    except OSError as e:
        yield unknown(subject, f"cannot read the WAL ({e}); unfinished trades cannot be ruled out", concern=Fact.WAL)
        return
    sound = True
    decoder = msgspec.json.Decoder(_Entry)
    last: dict[str, _Entry] = {}
    lines = raw.split(b"\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = _decode_entry(decoder, line)
        except (msgspec.MsgspecError, RecursionError):
            sound = False
            if n == len(lines):  # no newline after it: the bot died while appending this entry
                yield Finding(
                    "WAL_INCOMPLETE",
                    Level.CRITICAL,
                    f"wal:line{n}",
                    f"the last WAL line ({n}) is torn: the bot crashed while writing an operation",
                    action="verify recent trades against the exchange, then repair the WAL",
                    concern=Fact.WAL,
                )
            else:
                yield unknown(
                    f"wal:line{n}",
                    f"WAL line {n} is not a JSON object; the operation it held is unknown",
                    concern=Fact.WAL,
                )
            continue
        if entry.id is None:
            sound = False
            yield unknown(f"wal:line{n}", f"WAL line {n} has no id; the operation it held is unknown", concern=Fact.WAL)
            continue
        last[str(entry.id)] = entry
    for op_id, entry in last.items():
        if isinstance(entry.status, str) and entry.status in FINISHED:
            continue
        sound = False
        state = (
            entry.status
            if isinstance(entry.status, str) and entry.status in UNFINISHED
            else f"unknown status {entry.status!r:.60}"
        )
        yield Finding(
            "WAL_INCOMPLETE",
            Level.CRITICAL,
            f"wal:{op_id}",
            f"operation {op_id} ({entry.op}) was left {state}: the bot crashed mid-trade",
            action="check the exchange for this operation, finish or roll it back, and mark it in the WAL",
            context={"op": entry.op, "status": entry.status, "ts": entry.ts},
            concern=Fact.WAL,
        )
    if sound:
        yield Proof(Fact.WAL, f"{len(last)} operation(s) read to the end of {subject}, all terminal")
