"""Kill anywhere, the long version: SIGKILL `guardian heal` and `guardian run` at many moments on
trees holding every recoverable fault, and count what went wrong after each kill.

    .venv/bin/python bench/kill_anywhere.py [--runs 600] [--daemon-runs 150] [--no-syscalls] [--seed 6]

``--runs`` heals are killed after a delay uniform over 0..1.2x an unkilled heal's duration (spread
over the three fault kinds); then, unless ``--no-syscalls``, one heal of each kind is killed on
entry to every call of every file-changing syscall (strace fault injection); then
``--daemon-runs`` daemons are killed during their first look and runtime heal. Trees live in one
temporary directory, removed at the end. Exit 1 if any run broke a rule (each is printed).
The checks are those of tests/test_kill_anywhere.py, which runs a short version in CI.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's guardian and tests

from tests.test_kill_anywhere import KINDS, STRACE, Tally, daemon_kills, syscall_kills, timed_heal_kills


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=600, help="heals killed at a random moment (default 600)")
    ap.add_argument("--daemon-runs", type=int, default=150, help="daemons killed at a random moment (default 150)")
    ap.add_argument("--no-syscalls", action="store_true", help="skip the kills at each file-changing syscall")
    ap.add_argument("--seed", type=int, default=6)
    args = ap.parse_args()
    results: list[tuple[str, Tally]] = []
    with tempfile.TemporaryDirectory(prefix="guardian-kill-") as tmp:
        base = Path(tmp)
        if args.runs:
            results.append(("guardian heal, killed at a random moment", timed_heal_kills(base, args.runs, args.seed)))
            print(f"{results[-1][0]}: {results[-1][1].summary()}", flush=True)
        if not args.no_syscalls and STRACE:
            results.append(("guardian heal, killed at each file-changing syscall", syscall_kills(base, KINDS)))
            print(f"{results[-1][0]}: {results[-1][1].summary()}", flush=True)
        if args.daemon_runs:
            tally = daemon_kills(base, args.daemon_runs, args.seed + 1)
            results.append(("guardian run (runtime heal), killed at a random moment", tally))
            print(f"{results[-1][0]}: {results[-1][1].summary()}", flush=True)
    print("\n| what | runs | killed | killed mid-heal | faults injected | violations | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, t in results:
        print(f"| {name} | {t.runs} | {t.killed} | {t.mid_heal} | {t.faults} | {len(t.failures)} | {t.seconds:.0f} |")
    failures = [f for _, t in results for f in t.failures]
    for f in failures:
        print("VIOLATION", f)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
