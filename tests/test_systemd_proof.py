"""The proof against a real systemd 252 and a real journald: guardian installed by scripts/install.sh into a
throwaway container (tests/systemd_container.py) and shown to work with `systemctl` and `journalctl` only.

One container for the module: it boots in about a second. Most of the module's minute goes to the watchdog
(WatchdogSec=30s, as shipped), the bot's retry after a refused start (RestartSec=10) and installing guardian
three times (one bot, and the instances alpha and beta of the templates). Each test starts from a fresh
bot tree, stopped units and an empty alert state. The tests of the daemon skip while `guardian run` is not
there. The installer's own tests (a second run, --uninstall) come last, in that order.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from guardian.demo import build_bot_tree, default_open_position, iso_z
from tests.systemd_container import SOURCE, Container, poll, prerequisites

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
INSTALL = f"{SOURCE}/scripts/install.sh"  # the checkout as the container sees it
GUARDIAN = "/opt/guardian/bin/guardian"
BOT_USER = "tradingbot"
CONFIG = "/etc/guardian/guardian.yaml"
STATE = "/var/lib/guardian"
# The bot as tradingbot.service runs it: a heartbeat every few seconds, from the slot it was started in.
BOT_RUN_PY = """\
import json, os, time
from datetime import datetime, timezone
beat = "state/heartbeats/bot_cycle.json"
while True:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(beat + ".new", "w") as f:
        json.dump({"component": "bot_cycle", "pid": os.getpid(), "ts": now}, f)
    os.replace(beat + ".new", beat)
    time.sleep(5)
"""


@dataclass(frozen=True)
class Bot:
    """One bot in the container: its home, units, config and guardian's state directory."""

    home: str
    unit: str  # the bot's unit
    guardian: str  # guardian's unit
    config: str
    state: str

    @property
    def data(self) -> str:
        return f"{self.home}/trading-bot-current"


SINGLE = Bot("/srv/tradingbot", "tradingbot.service", "guardian.service", CONFIG, STATE)
ALPHA = Bot(
    "/srv/tradingbot-alpha",
    "tradingbot@alpha.service",
    "guardian@alpha.service",
    "/etc/guardian/alpha.yaml",
    f"{STATE}/alpha",
)
BETA = Bot(
    "/srv/tradingbot-beta",
    "tradingbot@beta.service",
    "guardian@beta.service",
    "/etc/guardian/beta.yaml",
    f"{STATE}/beta",
)
BOTS = (SINGLE, ALPHA, BETA)


@dataclass
class Host:
    """The container with guardian installed: what the tests drive."""

    c: Container
    configs: dict[str, str]  # config path -> its text as the installer wrote it
    daemon: bool  # whether `guardian run` exists in the installed guardian

    def reset(self, *bots: Bot) -> int:
        """Stop the bots' units and their guardians, rebuild their trees, restore their configs, forget
        guardian's alert state; return the realtime clock in µs, for journal entries from then on."""
        units = [u for b in bots for u in (b.unit, b.guardian)]
        self.c.systemctl("stop", *units)
        self.c.systemctl("reset-failed", *units)
        for b in bots:
            build_tree(self.c, b.home)
            self.c.path(b.config).write_text(self.configs[b.config])
            self.c.run("sh", "-c", f"rm -f {b.state}/alerts.json* {b.state}/status.json")
        return time.time_ns() // 1000

    def require_daemon(self) -> None:
        if not self.daemon:
            pytest.skip("waits for `guardian run` (the daemon): not in this checkout yet")


def build_tree(c: Container, home: str) -> None:
    """A healthy demo tree (slots blue/green, green current, one open position), owned by the bot's user,
    with a Python for the bot's unit in <home>/venv."""
    c.run("rm", "-rf", f"{home}/slots", f"{home}/trading-bot-current", f"{home}/DEPLOYED_SLOT")
    build_bot_tree(c.path(home), now=datetime.now(UTC))
    for slot in ("blue", "green"):
        c.path(f"{home}/slots/{slot}/src/run.py").write_text(BOT_RUN_PY)
    if not c.path(f"{home}/venv/bin/python").exists():
        c.run("/usr/bin/python3", "-m", "venv", "--without-pip", f"{home}/venv")
    c.run("chown", "-R", f"{BOT_USER}:{BOT_USER}", home)


def write_positions(c: Container, bot: Bot, opens: list[dict[str, Any]]) -> None:
    """Replace the open positions (keeping the file's owner) and make the portfolio agree with them."""
    positions = c.path(f"{bot.data}/logs/positions_futures.json")
    doc = json.loads(positions.read_text())
    doc["open_positions"] = opens
    positions.write_text(json.dumps(doc))
    portfolio = c.path(f"{bot.data}/logs/portfolio_futures.json")
    pf = json.loads(portfolio.read_text())
    pf["open_positions_count"] = len(opens)
    portfolio.write_text(json.dumps(pf))


def plant_duplicate_position(c: Container, bot: Bot) -> None:
    """Two open LONG positions on BTCUSDT: POSITION_CONFLICT, CRITICAL, never healed."""
    now = datetime.now(UTC)
    small = {"size": 0.004, "order": {"status": "filled", "qty": 0.004}}
    write_positions(
        c, bot, [default_open_position(now, id="pos-a", **small), default_open_position(now, id="pos-b", **small)]
    )


def fix_positions(c: Container, bot: Bot) -> None:
    """What the operator does after checking the exchange: one position, as it really is."""
    write_positions(c, bot, [default_open_position(datetime.now(UTC))])


def set_config(c: Container, bot: Bot, key: str, value: str) -> None:
    """Set ``key`` (two-space indented, as in the example config) to ``value`` in the bot's config."""
    path = c.path(bot.config)
    text, n = re.subn(rf"^(  {key}: )\S+", rf"\g<1>{value}", path.read_text(), count=1, flags=re.M)
    assert n == 1, f"{key} not in {bot.config}"
    path.write_text(text)


def messages(entries: list[dict[str, Any]]) -> list[str]:
    return [str(e.get("MESSAGE", "")) for e in entries]


def alerts(c: Container, unit: str, since_us: int, **fields: str) -> list[dict[str, Any]]:
    """guardian's journal entries in ``unit`` since ``since_us`` whose fields match ``fields``."""
    return c.journal("-u", unit, *(f"{k}={v}" for k, v in fields.items()), since_us=since_us)


def wait_for_alert(c: Container, unit: str, since_us: int, *, timeout: float = 90, **fields: str) -> dict[str, Any]:
    found = poll(lambda: alerts(c, unit, since_us, **fields), timeout=timeout, what=f"{fields} in {unit}'s journal")
    return found[0]


def seconds(span: str) -> float:
    """A time span as `systemctl show` prints it ("30s", "1min 30s", "500ms") in seconds."""
    units = {"h": 3600.0, "min": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|min|ms|us|s)\b", span)
    assert parts, f"not a time span: {span!r}"
    return sum(float(n) * units[u] for n, u in parts)


def main_pid(c: Container, unit: str) -> int:
    return int(c.show(unit, "MainPID")["MainPID"])


# --- the container --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    reason = prerequisites()
    if reason:
        pytest.skip(reason)
    c = Container.boot(REPO)
    try:
        c.run(
            "useradd",
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            BOT_USER,
        )
        for bot in BOTS:
            build_tree(c, bot.home)
        # The bot's own units, as the operator has them (the installer does not install them).
        for unit in ("tradingbot.service", "tradingbot@.service"):
            c.write(f"/etc/systemd/system/{unit}", (REPO / "systemd" / unit).read_text())
        # No --user: the installer takes the owner of the bot's data root, the bot's own user.
        install = ["bash", INSTALL, "--mode", "real"]
        c.run(*install, timeout=600)
        c.run(*install, "--instance", "alpha", timeout=600)
        c.run(*install, "--instance", "beta", timeout=600)
        configs = {b.config: c.path(b.config).read_text() for b in BOTS}
        daemon = c.run(GUARDIAN, "run", "--help", check=False).returncode == 0
        yield Host(c, configs, daemon)
    finally:
        c.shutdown()


# --- 1. systemctl start guardian --------------------------------------------------------------------------


def test_systemctl_start_guardian_reaches_running_through_ready_and_status_shows_its_status_line(host: Host) -> None:
    host.require_daemon()
    c = host.c
    host.reset(SINGLE)
    # Type=notify: `start` returns once guardian has sent READY=1, after its first full check.
    c.systemctl("start", "guardian", check=True)
    shown = c.show("guardian", "ActiveState", "SubState", "Type", "StatusText", "MainPID", "NRestarts")
    assert (shown["ActiveState"], shown["SubState"], shown["Type"]) == ("active", "running", "notify")
    assert shown["StatusText"], "guardian sent no STATUS="
    assert f'Status: "{shown["StatusText"]}"' in c.systemctl("status", "guardian").stdout
    assert shown["NRestarts"] == "0"
    # As the bot's user, with no capability at all.
    proc = c.path(f"/proc/{shown['MainPID']}/status").read_text()
    uid = c.run("id", "-u", BOT_USER).stdout.strip()
    assert re.search(rf"^Uid:\s+{uid}\s", proc, re.M)
    assert re.search(r"^CapEff:\s+0+$", proc, re.M)


# --- 2. a fault in the journal and in the JSONL log ------------------------------------------------------------


def test_a_fault_injected_into_the_tree_reaches_the_journal_with_its_fields_and_the_jsonl_log(host: Host) -> None:
    host.require_daemon()
    c = host.c
    since = host.reset(SINGLE)
    c.systemctl("start", "guardian", check=True)
    plant_duplicate_position(c, SINGLE)

    entry = wait_for_alert(c, "guardian", since, GUARDIAN_LEVEL="CRITICAL", GUARDIAN_CODE="POSITION_CONFLICT")
    assert entry["PRIORITY"] == "2"
    assert entry["SYSLOG_IDENTIFIER"] == "guardian"
    assert entry["_SYSTEMD_UNIT"] == "guardian.service"
    assert entry["GUARDIAN_EVENT"] == "firing"
    assert entry["GUARDIAN_SUBJECT"] == "BTCUSDT/LONG"
    assert entry["GUARDIAN_FINGERPRINT"] == "POSITION_CONFLICT:BTCUSDT/LONG"
    cursor = entry["__CURSOR"]
    assert cursor in [e["__CURSOR"] for e in c.journal("-u", "guardian", "-p", "crit", since_us=since)]

    lines = c.path(f"{SINGLE.data}/logs/operator_alerts.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in lines]
    same = [
        a
        for a in logged
        if a["context"].get("fingerprint") == entry["GUARDIAN_FINGERPRINT"] and a["ts"] == entry["GUARDIAN_TS"]
    ]
    assert len(same) == 1, logged
    assert (same[0]["level"], same[0]["code"], same[0]["subject"], same[0]["event"]) == (
        entry["GUARDIAN_LEVEL"],
        entry["GUARDIAN_CODE"],
        entry["GUARDIAN_SUBJECT"],
        entry["GUARDIAN_EVENT"],
    )


# --- 3. the gate ----------------------------------------------------------------------------------------------


def test_in_real_mode_a_duplicate_position_refuses_the_bots_start_with_the_reason_in_its_journal_until_fixed(
    host: Host,
) -> None:
    c = host.c
    since = host.reset(SINGLE)
    plant_duplicate_position(c, SINGLE)

    refused = c.systemctl("start", "tradingbot")
    assert refused.returncode != 0
    assert "control process exited with error code" in refused.stderr
    assert c.show("tradingbot", "ExecMainStartTimestampMonotonic")["ExecMainStartTimestampMonotonic"] == "0"
    said = messages(c.journal("-u", "tradingbot", since_us=since))
    reason = [m for m in said if m.startswith("guardian gate: REFUSED (real mode)")]
    assert reason, said
    assert "POSITION_CONFLICT BTCUSDT/LONG" in reason[0]
    # While systemd waits to retry (Restart=on-failure), `status` shows the gate's exit; the journal its reason.
    gate = f"ExecStartPre={GUARDIAN} --config {CONFIG} gate (code=exited, status=1/FAILURE)"
    assert gate in c.systemctl("status", "tradingbot").stdout

    fix_positions(c, SINGLE)
    fixed = time.time_ns() // 1000
    # `start` waits for the retry systemd has scheduled (RestartSec=), whose gate now allows the start.
    c.systemctl("start", "tradingbot", check=True)
    assert c.show("tradingbot", "ActiveState")["ActiveState"] == "active"
    said = messages(c.journal("-u", "tradingbot", since_us=fixed))
    assert any(m.startswith("guardian gate: ALLOWED (real mode)") for m in said), said


def test_in_paper_mode_the_bot_starts_with_the_dangerous_finding_reported(host: Host) -> None:
    c = host.c
    since = host.reset(SINGLE)
    set_config(c, SINGLE, "mode", "paper")
    plant_duplicate_position(c, SINGLE)

    c.systemctl("start", "tradingbot", check=True)
    assert c.show("tradingbot", "ActiveState")["ActiveState"] == "active"
    said = messages(c.journal("-u", "tradingbot", since_us=since))
    assert any(m.startswith("guardian gate: ALLOWED (paper mode always starts)") for m in said), said
    reported = alerts(c, "tradingbot", since, GUARDIAN_CODE="POSITION_CONFLICT")
    assert reported, said
    assert reported[0]["PRIORITY"] == "2"


# --- 4. the watchdog ------------------------------------------------------------------------------------------


def test_a_guardian_that_stops_answering_is_restarted_by_the_watchdog_and_fires_nothing_twice(host: Host) -> None:
    host.require_daemon()
    c = host.c
    since = host.reset(SINGLE)
    plant_duplicate_position(c, SINGLE)
    c.systemctl("start", "guardian", check=True)
    conflict = {"GUARDIAN_CODE": "POSITION_CONFLICT", "GUARDIAN_EVENT": "firing"}
    wait_for_alert(c, "guardian", since, GUARDIAN_CODE="POSITION_CONFLICT", GUARDIAN_EVENT="firing")
    shown = c.show("guardian", "MainPID", "WatchdogUSec", "RestartUSec")
    hung, watchdog_s, restart_s = int(shown["MainPID"]), seconds(shown["WatchdogUSec"]), seconds(shown["RestartUSec"])
    assert watchdog_s == 30

    c.run("kill", "-STOP", str(hung))
    stopped = time.monotonic()
    poll(
        lambda: (
            main_pid(c, "guardian") not in (0, hung) and c.show("guardian", "ActiveState")["ActiveState"] == "active"
        ),
        timeout=watchdog_s + 30,
        interval=0.5,
        what="guardian restarted under a new pid",
    )
    took = time.monotonic() - stopped
    # Within WatchdogSec of the last ping, plus the kill, RestartSec and the new guardian's first check.
    assert took <= watchdog_s + restart_s + 10, took
    said = messages(c.journal("-u", "guardian", since_us=since))
    assert any("Watchdog timeout" in m for m in said), said
    assert c.show("guardian", "NRestarts")["NRestarts"] == "1"

    # A new fault after the restart: once it is reported, the new guardian has evaluated the old one too.
    pending = {
        "id": "wal-9",
        "op": "TRADE_EXECUTE",
        "status": "in_progress",
        "ts": iso_z(datetime.now(UTC)),
        "data": {},
    }
    with c.path(f"{SINGLE.data}/state/wal/operations.wal").open("a") as wal:
        wal.write(json.dumps(pending) + "\n")
    marker = wait_for_alert(c, "guardian", since, GUARDIAN_CODE="WAL_INCOMPLETE", GUARDIAN_EVENT="firing")
    assert int(marker["_PID"]) != hung
    fired = alerts(c, "guardian", since, **conflict)
    assert [int(e["_PID"]) for e in fired] == [hung], "the restarted guardian fired POSITION_CONFLICT again"


# --- 5. reload ---------------------------------------------------------------------------------------------------


def test_systemctl_reload_rereads_the_config_and_a_broken_one_is_reported_and_the_old_one_kept(host: Host) -> None:
    host.require_daemon()
    c = host.c
    host.reset(SINGLE)
    c.systemctl("start", "guardian", check=True)
    pid = main_pid(c, "guardian")

    # A stricter limit: the open position ($500 of $10,625) is now too large.
    set_config(c, SINGLE, "max_position_pct", "0.1")
    reloaded = time.time_ns() // 1000
    c.systemctl("reload", "guardian", check=True)
    wait_for_alert(
        c, "guardian", reloaded, GUARDIAN_CODE="LIMIT_POSITION_SIZE", GUARDIAN_SUBJECT="position:pos-open-000001"
    )

    set_config(c, SINGLE, "mode", "live")
    broken = time.time_ns() // 1000
    c.systemctl("reload", "guardian", check=True)
    said = poll(
        lambda: [m for m in messages(c.journal("-u", "guardian", since_us=broken)) if "bot.mode" in m],
        timeout=30,
        what="the broken config reported in the journal",
    )
    assert said
    assert main_pid(c, "guardian") == pid
    poll(lambda: c.show("guardian", "ActiveState")["ActiveState"] == "active", timeout=30, what="guardian active again")

    # Still the stricter limit in force: a new $300 position is too large under it (not under the default 5%).
    eth = default_open_position(
        datetime.now(UTC),
        id="pos-eth",
        symbol="ETHUSDT",
        entry_price=3000.0,
        size=0.1,
        stop_loss=2900.0,
        order={"status": "filled", "qty": 0.1},
    )
    write_positions(c, SINGLE, [default_open_position(datetime.now(UTC)), eth])
    wait_for_alert(c, "guardian", broken, GUARDIAN_CODE="LIMIT_POSITION_SIZE", GUARDIAN_SUBJECT="position:pos-eth")
    assert main_pid(c, "guardian") == pid


def test_a_guardian_started_with_an_invalid_config_exits_78_and_is_not_restarted(host: Host) -> None:
    host.require_daemon()
    c = host.c
    since = host.reset(SINGLE)
    set_config(c, SINGLE, "mode", "live")

    assert c.systemctl("start", "guardian").returncode != 0
    # Restart=on-failure would have it waiting in auto-restart; RestartPreventExitStatus=78 leaves it failed.
    shown = c.show("guardian", "ActiveState", "SubState", "ExecMainStatus", "NRestarts")
    assert shown == {"ActiveState": "failed", "SubState": "failed", "ExecMainStatus": "78", "NRestarts": "0"}
    said = messages(c.journal("-u", "guardian", since_us=since))
    assert any("bot.mode" in m for m in said), said


# --- 6. several bots on one host ------------------------------------------------------------------------------


def test_two_bots_on_one_host_are_each_gated_by_their_own_config_through_the_templates(host: Host) -> None:
    c = host.c
    since = host.reset(ALPHA, BETA)
    plant_duplicate_position(c, ALPHA)

    assert c.systemctl("start", ALPHA.unit).returncode != 0
    c.systemctl("start", BETA.unit, check=True)
    assert c.show(BETA.unit, "ActiveState")["ActiveState"] == "active"
    assert c.show(ALPHA.unit, "ActiveState")["ActiveState"] != "active"
    alpha_said = messages(c.journal("-u", ALPHA.unit, since_us=since))
    beta_said = messages(c.journal("-u", BETA.unit, since_us=since))
    assert any(m.startswith("guardian gate: REFUSED (real mode)") and "POSITION_CONFLICT" in m for m in alpha_said)
    assert any(m.startswith("guardian gate: ALLOWED (real mode)") for m in beta_said), beta_said
    # Each gate keeps its alert state in its own instance's directory.
    assert "POSITION_CONFLICT" in c.path(f"{ALPHA.state}/alerts.json").read_text()
    assert "POSITION_CONFLICT" not in c.path(f"{BETA.state}/alerts.json").read_text()
    c.systemctl("stop", BETA.unit)


def test_each_bot_gets_its_own_guardian_through_the_template(host: Host) -> None:
    host.require_daemon()
    c = host.c
    since = host.reset(ALPHA, BETA)
    plant_duplicate_position(c, ALPHA)

    c.systemctl("start", ALPHA.guardian, BETA.guardian, check=True)
    pids = {b.guardian: main_pid(c, b.guardian) for b in (ALPHA, BETA)}
    assert 0 not in pids.values()
    assert len(set(pids.values())) == 2
    wait_for_alert(c, ALPHA.guardian, since, GUARDIAN_CODE="POSITION_CONFLICT")
    # Both have finished a full check (READY=1) before `start` returned: beta found no conflict.
    assert alerts(c, BETA.guardian, since, GUARDIAN_CODE="POSITION_CONFLICT") == []
    for b in (ALPHA, BETA):
        assert c.path(f"{b.state}/status.json").exists()


# --- the installed units in the running systemd -------------------------------------------------------------


def test_the_installed_units_verify_clean_and_guardian_is_rated_ok_by_the_running_systemd(host: Host) -> None:
    c = host.c
    units = [f"/etc/systemd/system/{u}" for u in ("guardian.service", "guardian@.service", "tradingbot.service")]
    done = c.run("systemd-analyze", "verify", "--man=no", *units, check=False)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    for unit in (SINGLE.guardian, ALPHA.guardian):  # with this host's 50-install.conf
        report = c.run("systemd-analyze", "security", "--no-pager", unit, check=False).stdout
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d) (\w+)", report)
        assert m, report
        assert float(m.group(1)) <= 2.0, report
    dropins = c.show(SINGLE.unit, "DropInPaths")["DropInPaths"]
    assert "/etc/systemd/system/tradingbot.service.d/10-guardian-gate.conf" in dropins


def test_the_sandbox_lets_guardian_repair_the_slots_and_keep_its_state_but_write_nothing_else(host: Host) -> None:
    c = host.c
    since = host.reset(SINGLE)
    c.systemctl("start", SINGLE.unit, check=True)  # a bot process to read and to signal
    bot_pid = main_pid(c, SINGLE.unit)
    c.run("rm", "-r", f"{SINGLE.data}/feature_store")  # DIRECTORY_MISSING, for heal (after the gate's own heal)
    probe = (
        "import json, os, sys\n"
        "out = {}\n"
        "for path in sys.argv[2:]:\n"
        "    try:\n"
        "        open(path, 'w').close(); os.unlink(path); out[path] = 'ok'\n"
        "    except OSError as e:\n"
        "        out[path] = e.strerror\n"
        "open('/proc/locks').read(); out['locks'] = 'read'\n"
        "os.kill(int(sys.argv[1]), 0); out['signal'] = 'sent'\n"
        "out['cwd'] = os.readlink(f'/proc/{sys.argv[1]}/cwd')\n"
        "with open(os.environ['STATE_DIRECTORY'] + '/probe.json', 'w') as f: json.dump(out, f)\n"
    )
    c.write("/etc/guardian/probe.py", probe)
    allowed = [f"{SINGLE.data}/logs/probe", f"{STATE}/probe"]
    denied = [f"{SINGLE.home}/probe", "/etc/guardian/probe", "/opt/guardian/probe", f"{SINGLE.home}/venv/probe"]
    # guardian.service itself, turned into a one-shot for the probe and a heal: the same sandbox.
    override = (
        "[Service]\nType=oneshot\nWatchdogSec=0\nExecStart=\n"
        f"ExecStart=/opt/guardian/bin/python /etc/guardian/probe.py {bot_pid} {' '.join(allowed + denied)}\n"
        f"ExecStart={GUARDIAN} --config {CONFIG} heal\n"
    )
    c.write("/run/systemd/system/guardian.service.d/90-probe.conf", override)
    try:
        c.systemctl("daemon-reload", check=True)
        c.systemctl("start", "guardian", check=True)
    finally:
        c.run("rm", "-rf", "/run/systemd/system/guardian.service.d", "/etc/guardian/probe.py")
        c.systemctl("daemon-reload", check=True)
        c.systemctl("stop", SINGLE.unit)

    seen = json.loads(c.path(f"{STATE}/probe.json").read_text())
    assert {p: seen[p] for p in allowed} == dict.fromkeys(allowed, "ok")
    assert {p: seen[p] for p in denied} == dict.fromkeys(denied, "Read-only file system")
    assert (seen["locks"], seen["signal"]) == ("read", "sent")
    assert seen["cwd"] == f"{SINGLE.home}/slots/green"
    healed, root = c.path(f"{SINGLE.data}/feature_store").stat(), c.path(SINGLE.data).stat()
    assert (healed.st_uid, healed.st_mode) == (root.st_uid, root.st_mode)
    entry = wait_for_alert(c, "guardian", since, GUARDIAN_CODE="DIRECTORY_MISSING", GUARDIAN_EVENT="healed", timeout=10)
    assert entry["PRIORITY"] == "4"


# --- the installer: again, then --uninstall (last: it removes guardian) -----------------------------------------


def test_the_installer_refuses_a_python_under_root_that_the_service_cannot_reach(host: Host) -> None:
    if not sys.base_prefix.startswith(("/root/", "/home/")):
        pytest.skip(f"the tests' Python lives in {sys.base_prefix}, not under /root or /home")
    # The base interpreter itself: a venv's link may sit in a checkout the container cannot see (/tmp).
    python = str(Path(sys.executable).resolve())
    done = host.c.run("bash", INSTALL, "--python", python, check=False)
    assert done.returncode != 0
    assert "which the service cannot reach" in done.stderr


def test_running_the_installer_again_keeps_the_config_and_leaves_the_units_as_they_were(host: Host) -> None:
    c = host.c
    host.reset(SINGLE)
    installed = [
        "/etc/systemd/system/guardian.service",
        "/etc/systemd/system/guardian.service.d/50-install.conf",
        "/etc/systemd/system/tradingbot.service.d/10-guardian-gate.conf",
        CONFIG,
    ]
    before = {p: c.path(p).read_bytes() for p in installed}
    done = c.run("bash", INSTALL, "--mode", "paper", timeout=600)
    assert f"kept {CONFIG}" in done.stdout
    assert {p: c.path(p).read_bytes() for p in installed} == before
    assert c.run("readlink", "/usr/local/bin/guardian").stdout.strip() == GUARDIAN
    assert c.run("guardian", "--config", CONFIG, "validate-config", check=False).returncode == 0


def test_uninstall_removes_what_the_installer_installed_and_keeps_config_state_and_backups(host: Host) -> None:
    c = host.c
    host.reset(SINGLE)
    c.systemctl("start", "tradingbot", check=True)  # the gate writes guardian's state
    c.systemctl("stop", "tradingbot")
    (c.path(f"{SINGLE.data}/logs/backups") / "positions_futures.json.20261121T000000Z.heal.bak").write_text("{}")
    kept = [CONFIG, ALPHA.config, f"{STATE}/alerts.json", f"{SINGLE.data}/logs/backups"]

    c.run("bash", INSTALL, "--uninstall", timeout=120)
    for unit in (SINGLE.guardian, ALPHA.guardian, BETA.guardian):
        assert c.show(unit, "LoadState")["LoadState"] == "not-found"
    for gone in (
        "/opt/guardian",
        "/usr/local/bin/guardian",
        "/etc/systemd/system/tradingbot.service.d",
        "/etc/systemd/system/tradingbot@.service.d",
        "/etc/systemd/system/guardian@alpha.service.d",
    ):
        assert not c.path(gone).exists() and not c.path(gone).is_symlink(), gone
    assert all(c.path(p).exists() for p in kept)
    assert list(c.path(f"{SINGLE.data}/logs/backups").iterdir())
    # The bot's own unit is left, without the gate.
    left = c.show(SINGLE.unit, "LoadState", "ExecStartPre", "DropInPaths")
    assert left["LoadState"] == "loaded"
    assert "guardian" not in left.get("ExecStartPre", "") + left.get("DropInPaths", "")
