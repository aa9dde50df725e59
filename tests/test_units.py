"""The units in systemd/: `systemd-analyze verify` is clean and `systemd-analyze security` rates guardian OK.

Both run offline, on copies of the files: no systemd needs to run. tests/test_systemd_proof.py checks the
same units installed, in a real systemd.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SYSTEMD = REPO / "systemd"
INSTALLER = REPO / "scripts" / "install.sh"
ENTRY_POINT = "/opt/guardian/bin/guardian"  # where scripts/install.sh puts it
BOT_HOME = "/srv/tradingbot"
MAX_EXPOSURE = 2.0  # "OK" or better
GUARDIAN_UNITS = ("guardian.service", "guardian@.service")
ALL_UNITS = (*GUARDIAN_UNITS, "tradingbot.service", "tradingbot@.service")
GATE_DROP_INS = ("tradingbot.service.d/10-guardian-gate.conf", "tradingbot@.service.d/10-guardian-gate.conf")
# What the template may set differently from guardian.service: its instance's config, state and bot.
PER_INSTANCE = ("ExecStart", "StateDirectory", "StateDirectoryMode", "ReadWritePaths")

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False)


def exposure(unit: Path) -> tuple[float, str]:
    """The overall exposure of a unit file (with the drop-ins beside it) and its rating."""
    done = analyze("security", "--offline=true", "--no-pager", str(unit))
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", done.stdout)
    assert m, f"no exposure level in:\n{done.stdout}\n{done.stderr}"
    return float(m.group(1)), m.group(2)


def stage(tmp_path: Path) -> Path:
    """Copy systemd/ to ``tmp_path``, the installed paths (guardian's entry point, the bots' Python) pointed
    at stubs there, so that `verify` can check that every command exists without anything installed."""
    units = tmp_path / "units"
    stub = tmp_path / "opt" / "guardian" / "bin" / "guardian"
    homes = tmp_path / "srv" / "tradingbot"
    for path in (stub, homes / "venv" / "bin" / "python", Path(f"{homes}-i") / "venv" / "bin" / "python"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    for src in SYSTEMD.rglob("*"):
        if src.is_file():
            dest = units / src.relative_to(SYSTEMD)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(src.read_text().replace(ENTRY_POINT, str(stub)).replace(BOT_HOME, str(homes)))
    return units


def service_lines(unit: Path) -> list[tuple[str, str]]:
    """The (key, value) assignments of a unit's [Service] section, in order."""
    section, out = "", []
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out.append((key, value))
    return out


def test_every_unit_and_gate_drop_in_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    units = stage(tmp_path)
    # A unit's drop-in directory beside it is loaded with it: the gate is verified inside its bot's unit.
    done = analyze("verify", "--man=no", *(str(units / u) for u in ALL_UNITS))
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == ""


def test_verify_would_catch_a_gate_drop_in_pointing_at_a_missing_entry_point(tmp_path: Path) -> None:
    units = stage(tmp_path)
    (tmp_path / "opt" / "guardian" / "bin" / "guardian").unlink()
    done = analyze("verify", "--man=no", str(units / "tradingbot.service"))
    assert done.returncode != 0
    assert "guardian is not executable" in done.stderr


@pytest.mark.parametrize("unit", GUARDIAN_UNITS)
def test_guardian_is_rated_ok_or_better_by_systemd_analyze_security(unit: str) -> None:
    level, rating = exposure(SYSTEMD / unit)
    assert level <= MAX_EXPOSURE, f"{unit}: exposure {level} {rating}"
    assert rating in ("PERFECT", "SAFE", "OK")


def test_a_default_unit_is_rated_unsafe_so_the_rating_above_is_earned(tmp_path: Path) -> None:
    bare = tmp_path / "bare.service"
    bare.write_text(f"[Service]\nType=notify\nExecStart={ENTRY_POINT} run\n")
    level, rating = exposure(bare)
    assert level > 9.0
    assert rating == "UNSAFE"


def test_guardian_stays_ok_with_the_most_permissive_drop_in_the_installer_writes(tmp_path: Path) -> None:
    # Running as root, for a bot under /home: the installer's widest choices (ProtectHome=read-only, chown).
    dropin = subprocess.run(
        ["bash", str(INSTALLER), "--print-dropin", "--user", "root", "--home", "/home/bot"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "User=root" in dropin
    assert "ProtectHome=read-only" in dropin
    units = stage(tmp_path)
    (units / "guardian.service.d").mkdir()
    (units / "guardian.service.d" / "50-install.conf").write_text(dropin)
    level, rating = exposure(units / "guardian.service")
    assert level <= MAX_EXPOSURE, f"exposure {level} {rating} with:\n{dropin}"
    done = analyze("verify", "--man=no", str(units / "guardian.service"))
    assert done.stdout + done.stderr == ""


def test_guardian_runs_without_any_capability_and_writes_only_the_slots_and_its_state() -> None:
    lines = dict(service_lines(SYSTEMD / "guardian.service"))
    assert lines["CapabilityBoundingSet"] == ""
    assert lines["AmbientCapabilities"] == ""
    assert lines["User"] != "root"
    assert lines["ProtectSystem"] == "strict"
    assert lines["ReadWritePaths"] == f"-{BOT_HOME}/slots"
    assert lines["StateDirectory"] == "guardian"


def test_the_template_is_sandboxed_exactly_like_the_single_unit() -> None:
    single = [kv for kv in service_lines(SYSTEMD / "guardian.service") if kv[0] not in PER_INSTANCE]
    template = [kv for kv in service_lines(SYSTEMD / "guardian@.service") if kv[0] not in PER_INSTANCE]
    assert template == single
    per_instance = dict(service_lines(SYSTEMD / "guardian@.service"))
    assert per_instance["ExecStart"] == f"{ENTRY_POINT} --config /etc/guardian/%i.yaml run"
    assert per_instance["StateDirectory"] == "guardian/%i"
    assert per_instance["ReadWritePaths"] == "-/srv/tradingbot-%i/slots"


def test_the_daemon_unit_is_notify_with_a_watchdog_restarts_on_failure_but_not_on_a_bad_config() -> None:
    lines = dict(service_lines(SYSTEMD / "guardian.service"))
    assert lines["Type"] == "notify"
    assert lines["WatchdogSec"] == "30s"
    assert lines["Restart"] == "on-failure"
    assert lines["RestartPreventExitStatus"] == "78"
    assert lines["ExecReload"] == "/bin/kill -HUP $MAINPID"


@pytest.mark.parametrize("dropin", GATE_DROP_INS)
def test_the_gate_drop_ins_run_the_installed_entry_point_by_its_absolute_path(dropin: str) -> None:
    (key, value), *rest = service_lines(SYSTEMD / dropin)
    assert rest == []
    config = "%i.yaml" if "@" in dropin else "guardian.yaml"
    assert (key, value) == ("ExecStartPre", f"{ENTRY_POINT} --config /etc/guardian/{config} gate")
    assert f"PREFIX={Path(ENTRY_POINT).parents[1]}\n" in INSTALLER.read_text()
