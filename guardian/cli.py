"""``guardian --config FILE <command>``: argument parsing and output only; the work is elsewhere.

Exit codes: check and status 0/1/2/3 (OK/WARNING/CRITICAL/UNKNOWN, as monitoring plugins; CRITICAL
too when a real-mode start would be refused; status UNKNOWN when its picture is stale); gate 0 allow,
1 refuse; 78 (EX_CONFIG) for an invalid config everywhere; heal 0 when nothing failed and no CRITICAL
remains, else 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from guardian import config as config_mod
from guardian.config import EX_CONFIG, Config, ConfigError
from guardian.model import EXIT_CRITICAL, Finding, Report, check_exit_code

if TYPE_CHECKING:
    from guardian.heal import HealResult
    from guardian.verdict import Verdict


def _load(args: argparse.Namespace) -> Config:
    return config_mod.load(config_mod.resolve_path(args.config))


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _finding_rows(findings: Sequence[Finding]) -> list[str]:
    if not findings:
        return []
    w = max(len(f.code) for f in findings)
    ws = min(40, max(len(f.subject) for f in findings))
    return [f"  {f.level.name:<8}  {f.code:<{w}}  {f.subject:<{ws}}  {f.message}" for f in findings]


def _summary(report: Report, what: str) -> str:
    status = report.worst.name if report.worst else "OK"
    return (
        f"guardian {what}: {status} - score {report.score}/100, {len(report.findings)} finding(s), mode {report.mode}"
    )


def cmd_check(args: argparse.Namespace) -> int:
    """Read-only: the checks, the repairs the gate would plan, and the gate's verdict on them."""
    from guardian.heal import heal
    from guardian.verdict import judge

    cfg = _load(args)
    result = heal(cfg, dry_run=True)
    report = result.after
    verdict = judge(report, result.actions, mode=cfg.bot.mode, min_score=cfg.thresholds.min_health_score)
    code = check_exit_code(report.findings)
    if cfg.bot.mode == "real" and not verdict.sound and not verdict.pending:
        code = EXIT_CRITICAL  # the bot cannot start: as critical as any finding
    if args.json:
        _print_json({**report.to_json(), "verdict": verdict.to_json(), "exit_code": code})
    else:
        print(_summary(report, "check"))
        for row in _finding_rows(report.findings):
            print(row)
        print(_verdict_line(verdict))
    return code


def _verdict_line(verdict: Verdict) -> str:
    """What the gate would decide, as ``check`` and ``status`` show it."""
    if verdict.sound:
        return "  real-mode start: allowed: state proven sound"
    from guardian.verdict import SHOWN

    head = (
        "  real-mode start: after the planned repairs, judged again"
        if verdict.pending
        else "  real-mode start: REFUSED"
    )
    return "\n".join([head, *(f"    {b}" for b in verdict.blockers[: SHOWN * 2])])


def _heal_with_alerts(cfg: Config, now: datetime, *, dry_run: bool = False, json_out: bool = False) -> HealResult:
    """Heal, and tell the operator what changed: each heal, and each finding that is new, due a
    reminder or resolved (the alert engine's state is shared with the daemon). A dry run tells nobody."""
    from guardian.alerts import Alert
    from guardian.alerts.build import build_alerter
    from guardian.alerts.engine import engine_for
    from guardian.context import Context
    from guardian.heal import heal
    from guardian.model import Outcome

    if dry_run:
        return heal(cfg, now=now, dry_run=True)
    with engine_for(cfg, now) as engine:
        result = heal(cfg, now=now, budget=engine)
        alerts = [
            Alert.from_finding(a.finding, event="healed", now=now, message=a.detail)
            for a in result.actions
            if a.outcome is Outcome.HEALED
        ]
        if engine is None:
            alerts += [Alert.from_finding(f, event="firing", now=now) for f in result.after.findings]
        else:
            from guardian.checks.processes import LIVENESS_CODES

            alerts += engine.evaluate(result.after.findings, unseen=LIVENESS_CODES)
    alerter = build_alerter(Context(cfg, now=now), stdout_free=not json_out)
    for alert in alerts:
        alerter.emit(alert)
    return result


def cmd_heal(args: argparse.Namespace) -> int:
    cfg = _load(args)
    result = _heal_with_alerts(cfg, datetime.now(UTC), dry_run=args.dry_run, json_out=args.json)
    if args.json:
        _print_json(result.to_json())
    else:
        out = result.to_json()
        print(
            f"guardian heal{' --dry-run' if args.dry_run else ''}: "
            f"{'success' if result.success else 'NOT healthy'} - score {result.before.score} -> {result.after.score}"
        )
        for key in ("planned", "healed", "failed", "refused", "critical"):
            for line in out[key]:
                print(f"  {key.upper():<8}  {line}")
    return 0 if result.success or args.dry_run else 1


def cmd_gate(args: argparse.Namespace) -> int:
    from guardian.alerts import Alert, iso
    from guardian.alerts.build import build_alerter
    from guardian.context import Context
    from guardian.gate import decide

    try:
        cfg = _load(args)
    except ConfigError as e:
        print(e.report(), file=sys.stderr)
        print("guardian gate: REFUSED: invalid config (exit 78)", file=sys.stderr)
        return EX_CONFIG
    now = datetime.now(UTC)
    try:
        result = _heal_with_alerts(cfg, now, json_out=args.json)
        decision = decide(result, mode=cfg.bot.mode, min_score=cfg.thresholds.min_health_score)
    except Exception as e:  # the gate must answer; paper mode always starts, real mode fails safe
        allowed = cfg.bot.mode == "paper"
        reason = (
            f"guardian gate: {'ALLOWED' if allowed else 'REFUSED'} ({cfg.bot.mode} mode): guardian failed: "
            f"{type(e).__name__}: {e}"
        )
        _record_gate(cfg, allowed=allowed, reason=reason, now=now, sound=False)
        print(reason, file=sys.stderr)
        return 0 if allowed else 1
    _record_gate(cfg, allowed=decision.allowed, reason=decision.reason, now=now, sound=decision.verdict.sound)
    build_alerter(Context(cfg, now=now), stderr=False, stdout_free=not args.json).emit(
        Alert(
            iso(now),
            "INFO" if decision.allowed else "CRITICAL",
            "GATE_ALLOWED" if decision.allowed else "GATE_REFUSED",
            cfg.bot.unit,
            decision.reason,
            not decision.allowed,
            "gate",
            {"mode": cfg.bot.mode, "score": result.after.score, "reasons": list(decision.reasons)},
        )
    )
    if args.json:
        _print_json(decision.to_json())
    print(decision.reason, file=sys.stderr, flush=True)  # last: the line `systemctl status` shows
    return decision.exit_code


def _record_gate(cfg: Config, *, allowed: bool, reason: str, now: datetime, sound: bool) -> None:
    """Count the decision for the daemon's metrics and, on an allowed start whose state was proven
    sound, the data root's filesystem (a later start on another is DATA_ROOT_CHANGED). A failure to
    record never changes the decision."""
    from guardian.context import Context
    from guardian.history import data_root_identity, record_decision, state_dir

    identity = None
    if allowed and sound:
        try:
            identity = data_root_identity(Context(cfg, now=now).data)
        except OSError:
            identity = None
    try:
        record_decision(state_dir(cfg), allowed=allowed, mode=cfg.bot.mode, reason=reason, now=now, data_root=identity)
    except OSError as e:
        print(f"guardian gate: warning: decision not counted in {state_dir(cfg)}: {e}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    path = config_mod.resolve_path(args.config)
    cfg = config_mod.load(path)
    if args.json:
        _print_json({"valid": True, "path": str(path), "mode": cfg.bot.mode, "home": str(cfg.bot.home)})
    else:
        print(f"{path}: valid (mode {cfg.bot.mode}, home {cfg.bot.home})")
    return 0


def cmd_backups(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from guardian.backups import BackupStore
    from guardian.context import Context

    ctx = Context(_load(args))
    store = BackupStore(ctx.data, ctx.backups_dir)
    if args.action == "list":
        items, problem = store.list_checked()
        if problem:
            print(f"guardian backups: warning: {problem}; checksums unknown", file=sys.stderr)
        if args.json:
            _print_json([asdict(b) for b in items])
        elif not items:
            print(f"no backups in {ctx.backups_dir}")
        else:
            for b in items:
                print(f"  {b.ts}  {b.reason:<16} {b.size:>12}  {b.original:<36} {b.id}")
        return 0
    if not args.id:
        print("guardian backups restore: give the backup id (see `guardian backups list`)", file=sys.stderr)
        return 2
    if ctx.data_in_slot and ctx.slot.problem:  # the data root is wherever the link points: anywhere
        print(
            f"guardian backups restore: not restoring: deployment link {ctx.link} {ctx.slot.problem}", file=sys.stderr
        )
        return 1
    try:
        restored, previous = store.restore(
            args.id, lock_timeout=ctx.cfg.heal.lock_timeout, soft_lock=ctx.cfg.bot.lock_style == "soft"
        )
    except KeyError:
        print(f"guardian backups restore: no backup {args.id!r} in {ctx.backups_dir}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"guardian backups restore: {e}", file=sys.stderr)
        return 1
    out = {"restored": restored.id, "to": restored.original, "previous_kept_as": previous.id if previous else None}
    if args.json:
        _print_json(out)
    else:
        print(
            f"restored {restored.original} from {restored.id}"
            + (f"; the file it replaced is kept as {previous.id}" if previous else "")
        )
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from guardian.alerts import Alert, iso
    from guardian.alerts.build import build_alerter
    from guardian.context import Context
    from guardian.state import load_json_object
    from guardian.stop import clear_stop, set_stop

    ctx = Context(_load(args))
    now = ctx.now
    if args.command == "emergency-stop":
        set_stop(ctx, args.reason, by="operator", now=now)
        alert = Alert(
            iso(now),
            "CRITICAL",
            "EMERGENCY_STOP_SET",
            ctx.rel(ctx.stop_path),
            f"emergency stop activated: {args.reason}",
            True,
            "firing",
            {"reason": args.reason},
        )
    else:
        clear_stop(ctx, args.approver, now=now)
        alert = Alert(
            iso(now),
            "INFO",
            "EMERGENCY_STOP_CLEARED",
            ctx.rel(ctx.stop_path),
            f"emergency stop cleared by {args.approver}",
            False,
            "resolved",
            {"approver": args.approver},
        )
    build_alerter(ctx, stdout_free=not args.json).emit(alert)
    if args.json:
        _print_json(load_json_object(ctx.stop_path, required=(), max_bytes=1 << 20).data)
    return 0


def cmd_accept_data_root(args: argparse.Namespace) -> int:
    """Record the data root as it is now as the bot's own, on the operator's word."""
    from guardian.alerts import Alert, iso
    from guardian.alerts.build import build_alerter
    from guardian.context import Context
    from guardian.history import accept_data_root, data_root_identity, state_dir

    ctx = Context(_load(args))
    identity = data_root_identity(ctx.data)
    before = accept_data_root(state_dir(ctx.cfg), identity=identity, by=args.by, now=ctx.now)
    was = before.data_root
    text = (
        f"data root {ctx.data} accepted by {args.by} (device {identity.dev:#x}, fsid {identity.fsid:#x}"
        + (f"; it was device {was.dev:#x}, fsid {was.fsid:#x} at {was.path}" if was else "")
        + ")"
    )
    build_alerter(ctx, stdout_free=not args.json).emit(
        Alert(iso(ctx.now), "INFO", "DATA_ROOT_ACCEPTED", ctx.rel(ctx.data), text, False, "resolved", {"by": args.by})
    )
    _print_json({"accepted": str(ctx.data), "by": args.by}) if args.json else print(text)
    return 0


def cmd_silence(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from guardian.alerts.engine import locked_state, new_silence
    from guardian.history import state_dir

    cfg = _load(args)
    now = datetime.now(UTC)
    with locked_state(state_dir(cfg)) as state:
        if args.action == "add":
            if not args.target or args.duration is None or not args.reason:
                print("guardian silence add CODE[:SUBJECT] --for 2h --reason TEXT", file=sys.stderr)
                return 2
            code, _, subject = args.target.partition(":")
            s = new_silence(code, subject or None, seconds=args.duration, reason=args.reason, now=now)
            state.silences.append(s)
            out: Any = asdict(s)
            text = f"silenced {args.target} until {datetime.fromtimestamp(s.until, UTC):%Y-%m-%d %H:%M}Z (id {s.id})"
        elif args.action == "remove":
            keep = [s for s in state.silences if s.id != args.target]
            if len(keep) == len(state.silences):
                print(f"guardian silence remove: no silence {args.target!r}", file=sys.stderr)
                return 1
            state.silences = keep
            out, text = {"removed": args.target}, f"removed silence {args.target}"
        else:
            live = [s for s in state.silences if s.until > now.timestamp()]
            out = [asdict(s) for s in live]
            text = (
                "\n".join(
                    f"  {s.id}  {s.code}{':' + s.subject if s.subject else ''}  until "
                    f"{datetime.fromtimestamp(s.until, UTC):%Y-%m-%d %H:%M}Z  {s.reason}"
                    for s in live
                )
                or "no silences"
            )
    _print_json(out) if args.json else print(text)
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from guardian.alerts.reader import AlertFilter, ReadStats, follow, format_table, read_alerts
    from guardian.context import Context

    ctx = Context(_load(args))
    since = timedelta(seconds=args.since) if args.since is not None else None
    flt = AlertFilter(since=since, level=args.level, code=args.code, now=ctx.now)
    stats = ReadStats()

    def warn_skipped(reported: int) -> int:
        if stats.skipped > reported:
            print(f"guardian alerts: {stats.skipped} unreadable line(s) skipped in {ctx.alerts_path}*", file=sys.stderr)
        return stats.skipped

    if args.follow:  # until Ctrl-C (exit 130); rows as they come, with widths that do not depend on them
        if not args.json:
            print(format_table([], fixed=True), flush=True)
        reported = 0
        for doc in follow(ctx.alerts_path, flt, history=True, last=args.last, stats=stats):
            print(json.dumps(doc) if args.json else format_table([doc], header=False, fixed=True), flush=True)
            reported = warn_skipped(reported)
        return 0
    result = read_alerts(ctx.alerts_path, flt, last=args.last, stats=stats)
    warn_skipped(0)
    if args.json:
        for doc in result.alerts:
            print(json.dumps(doc))
    elif result.alerts:
        print(format_table(result.alerts))
    else:
        matching = args.since is not None or args.level or args.code
        print(f"no alerts{' matching' if matching else ''} in {ctx.alerts_path}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from guardian.daemon.loop import run

    return run(config_mod.resolve_path(args.config))


def cmd_status(args: argparse.Namespace) -> int:
    from guardian.daemon import status
    from guardian.history import state_dir

    cfg = _load(args)
    directory = state_dir(cfg)
    try:
        snapshot = status.load(directory)
    except status.StatusUnreadable as e:
        if args.json:
            _print_json({"running": False, "stale": True, "stale_reasons": [str(e)], "state_dir": str(directory),
                         "status": None})  # fmt: skip
        else:
            print(f"guardian daemon: UNKNOWN - {e}")
        return 3
    live = status.assess(snapshot.status, now=datetime.now(UTC), sweep=cfg.daemon.sweep) if snapshot else None
    if args.json:
        _print_json(
            {
                "running": live is not None and live.running,
                "stale": live is not None and bool(live.stale),
                "stale_reasons": list(live.stale) if live else [],
                "state_dir": str(directory),
                "status": snapshot.doc if snapshot else None,
            }
        )
    else:
        print(status.render(snapshot, live, directory=directory))
    return status.exit_code(snapshot, live)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="guardian", description="Keeps a live trading bot's state sound and gates its start."
    )
    p.add_argument(
        "--config", metavar="FILE", help="config file (default: $GUARDIAN_CONFIG, else /etc/guardian/guardian.yaml)"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Any, help_: str, *, json_flag: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        if json_flag:
            sp.add_argument("--json", action="store_true", help="print the full report as JSON")
        return sp

    add("check", cmd_check, "run every check once, read-only (exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)")
    add("heal", cmd_heal, "repair what is safe to repair, then verify").add_argument(
        "--dry-run", action="store_true", help="print the plan; change nothing"
    )
    add("gate", cmd_gate, "ExecStartPre= of the bot: heal, then allow (0) or refuse (1) the start")
    add(
        "run", cmd_run, "the daemon: watch the bot, heal and alert until stopped (systemd Type=notify)", json_flag=False
    )
    add("status", cmd_status, "what the daemon sees now, from its status file (exit as check; 3: not running)")
    add("validate-config", cmd_validate, "check the config and nothing else (exit 78 if invalid)")
    b = add("backups", cmd_backups, "list or restore the backups guardian keeps before changing a file")
    b.add_argument("action", choices=("list", "restore"))
    b.add_argument("id", nargs="?", help="the backup to restore (from `backups list`)")
    add("emergency-stop", cmd_stop, "activate the bot's kill switch").add_argument("--reason", required=True)
    add("clear-stop", cmd_stop, "clear the kill switch, recording who approved").add_argument(
        "--approver", required=True
    )
    add(
        "accept-data-root", cmd_accept_data_root, "record the data root as it is now as the bot's (after a real move)"
    ).add_argument("--by", required=True, help="who checked that the bot's data volume is the one mounted")
    s = add("silence", cmd_silence, "mute an alert (a silenced CRITICAL still blocks the gate)")
    s.add_argument("action", choices=("add", "list", "remove"))
    s.add_argument("target", nargs="?", help="add: CODE or CODE:SUBJECT; remove: the silence id")
    s.add_argument("--for", dest="duration", type=config_mod.parse_duration, help="how long, e.g. 30m, 2h")
    s.add_argument("--reason", help="why (shown in `silence list`)")
    a = add("alerts", cmd_alerts, "read the alert log, rotated files included (--json: one object per line)")
    a.add_argument("--since", type=config_mod.parse_duration, help="only the last 30m, 2h, ...")
    a.add_argument("--level", type=str.upper, choices=("INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"), help="and worse")
    a.add_argument("--code", help="only this code (a glob such as 'HEARTBEAT_*' works)")
    a.add_argument("--last", type=int, metavar="N", help="only the last N alerts that match")
    a.add_argument("--follow", "-f", action="store_true", help="then print new alerts as they are written")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except ConfigError as e:
        print(e.report(), file=sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        print(f"guardian {args.command}: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 3 if args.command == "check" else 1


def entry() -> None:
    raise SystemExit(main())
