"""Time `guardian gate` on healthy bot trees of growing size, beside the bare interpreter.

    bench/run [--sizes 1000,10000] [--runs N] [--cmd TEMPLATE]

The gate sits in the bot unit's ExecStartPre, so its cost is paid on every bot start: what matters
is wall time from exec to exit (interpreter start included) and the child's peak RSS. Both come
from the child itself (`os.wait4`), each measured in a fresh process. Trees live in one temporary
directory, removed at the end. Exit 1 only if the gate refuses a healthy tree or errors.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from guardian.demo import build_bot_tree, write_config

DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000)
MB = 1_000_000


@dataclass(frozen=True)
class Sample:
    seconds: float
    max_rss: int  # bytes
    code: int
    stdout: str
    stderr: str


def run_child(cmd: Sequence[str], scratch: Path) -> Sample:
    """Run `cmd` to completion; return its wall time, peak RSS, exit code and output.

    Output goes to files under `scratch`, not pipes, so a chatty child cannot block and the
    parent does no reading while the clock runs.
    """
    with tempfile.TemporaryFile(dir=scratch) as out, tempfile.TemporaryFile(dir=scratch) as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        # wait4, not Popen.wait: it hands back this child's own rusage (ru_maxrss, in KiB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Sample(
            seconds,
            usage.ru_maxrss * 1024,
            proc.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


@dataclass(frozen=True)
class Row:
    n: int
    file_bytes: int
    build_s: float
    gate: list[Sample]
    bare: list[Sample]

    @property
    def gate_median(self) -> float:
        return statistics.median(s.seconds for s in self.gate)

    @property
    def bare_median(self) -> float:
        return statistics.median(s.seconds for s in self.bare)

    @property
    def ratio(self) -> float:
        return self.gate_median / self.bare_median

    @property
    def peak_rss(self) -> int:
        return max(s.max_rss for s in self.gate)


def default_template() -> list[str]:
    script = Path(sys.prefix) / "bin" / "guardian"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "guardian"]
    return [*base, "--config", "{config}", "gate"]


def expand(template: Sequence[str], **values: str) -> list[str]:
    # Plain replace, not str.format: a stand-in `python -c` command may hold braces of its own.
    expanded = []
    for token in template:
        filled = token
        for key, value in values.items():
            filled = filled.replace("{" + key + "}", value)
        expanded.append(filled)
    return expanded


class GateFailed(Exception):
    def __init__(self, n: int, cmd: Sequence[str], sample: Sample) -> None:
        super().__init__(f"N={n}: {shlex.join(cmd)} exited {sample.code}\n{sample.stderr}{sample.stdout}")


def measure(n: int, runs: int, template: Sequence[str], work: Path) -> Row:
    home = work / f"n{n}"
    started = time.perf_counter()
    tree = build_bot_tree(home / "bot", closed=n)
    build_s = time.perf_counter() - started
    # guardian's state and the journal socket stay in the temp dir: the bench writes nowhere else.
    extra = {"guardian": {"state_dir": str(home / "guardian-state")}, "alerts": {"journald": False}}
    config = write_config(tree, home / "guardian.yaml", extra=extra)
    gate_cmd = expand(template, config=str(config), home=str(tree.home), positions=str(tree.positions))
    bare_cmd = [sys.executable, "-I", "-c", "pass"]
    # One untimed run each: bytecode caches and the page cache are warm on a real host too.
    samples: dict[str, list[Sample]] = {"gate": [], "bare": []}
    for i in range(runs + 1):
        # Interleaved, so drift in the machine's load hits both columns alike.
        for name, cmd in (("gate", gate_cmd), ("bare", bare_cmd)):
            sample = run_child(cmd, work)
            if sample.code != 0:
                raise GateFailed(n, cmd, sample)
            if i:
                samples[name].append(sample)
    row = Row(n, tree.positions.stat().st_size, build_s, samples["gate"], samples["bare"])
    shutil.rmtree(home)  # one big tree on disk at a time
    return row


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| N | positions MB | gate median ms | gate min ms | bare median ms | ratio | peak RSS MB | RSS / file |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.n:,} | {r.file_bytes / MB:.1f} | {r.gate_median * 1e3:.0f} "
            f"| {min(s.seconds for s in r.gate) * 1e3:.0f} | {r.bare_median * 1e3:.0f} | {r.ratio:.1f}x "
            f"| {r.peak_rss / MB:.0f} | {r.peak_rss / r.file_bytes:.2f} |"
        )
    return "\n".join(lines)


def targets(rows: Sequence[Row]) -> str:
    by_n = {r.n: r for r in rows}

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lines = ["Targets:"]
    if (r := by_n.get(10_000)) is not None:
        lines.append(f"- 10k: gate <= 8x bare interpreter: {r.ratio:.1f}x, {verdict(r.ratio <= 8)}")
    else:
        lines.append("- 10k: gate <= 8x bare interpreter: not measured")
    if (r := by_n.get(1_000_000)) is not None:
        rss = r.peak_rss / r.file_bytes
        lines.append(f"- 1M: gate < 1.5 s: {r.gate_median:.2f} s, {verdict(r.gate_median < 1.5)}")
        lines.append(f"- 1M: peak RSS <= 1.25x file: {rss:.2f}x, {verdict(rss <= 1.25)}")
    else:
        lines.append("- 1M: gate < 1.5 s, peak RSS <= 1.25x file: not measured")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sizes",
        default=",".join(map(str, DEFAULT_SIZES)),
        help="closed positions per tree, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--runs", type=int, help="timed runs per size (default: 7, or 3 at 1M and above)")
    parser.add_argument(
        "--cmd",
        help="gate command in place of `guardian --config {config} gate`; "
        "{config}, {home} and {positions} are filled in",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    template = shlex.split(args.cmd) if args.cmd else default_template()

    print(f"gate: {shlex.join(template)}")
    print(f"bare: {sys.executable} -I -c pass")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="guardian-bench-") as tmp:
        for n in sizes:
            runs = args.runs or (3 if n >= 1_000_000 else 7)
            print(f"N={n:,}: building, then {runs} runs ...", file=sys.stderr, flush=True)
            try:
                rows.append(measure(n, runs, template, Path(tmp)))
            except GateFailed as failed:
                print(f"gate failed on a healthy tree: {failed}", file=sys.stderr)
                return 1
    print()
    print(table(rows))
    print()
    print(targets(rows))
    print("Trees built in: " + ", ".join(f"{r.n:,}: {r.build_s:.2f} s" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
