"""A real systemd in a throwaway container, for the proof tests.

systemd-nspawn boots the host's own systemd over an overlay whose lower layer is the host's root and whose
upper layer is a tmpfs, mounted in a private mount namespace: the container sees the host (the checkout,
the Python interpreters), and every write it makes (/etc, /opt, /var, the bot's trees) vanishes with it.
It is driven from the host with ``nsenter`` into the namespaces of its systemd, by pid; files inside it are
reached through ``/proc/<that pid>/root``. Never boot systemd on the host's own filesystem: it would run
systemd-tmpfiles over the host's /tmp and remount its cgroup tree read-only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_TARGET = "guardian-proof.target"
# What the container inherits from the test's environment: how pip reaches an index, nothing else.
PASSED_ENV = ("PIP_", "SSL_CERT_", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "http_proxy", "https_proxy", "no_proxy")

# Where the container sees the checkout: bound read-only at a fixed path, since the checkout may sit where
# the container's own mounts hide it (a clone under /tmp, which the container's systemd mounts afresh).
SOURCE = "/usr/src/guardian"

# Runs as root in a private mount namespace (unshare --mount): $1 scratch dir, $2 boot target, $3 lifetime,
# $4 the checkout.
BOOT_SCRIPT = r"""
set -eu
scratch=$1 target=$2 lifetime=$3 checkout=$4
mount --make-rprivate /
mount -t tmpfs -o mode=0755 guardian-proof "$scratch"
mkdir "$scratch/upper" "$scratch/work" "$scratch/merged"
mount -t overlay overlay -o "lowerdir=/,upperdir=$scratch/upper,workdir=$scratch/work" "$scratch/merged"
mkdir -p "$scratch/merged/etc/systemd/system"
cat >"$scratch/merged/etc/systemd/system/$target" <<EOF
[Unit]
Description=A basic system for guardian's proof: the tests start what they need
Requires=basic.target
After=basic.target
EOF
exec timeout --kill-after=10 "$lifetime" \
    systemd-nspawn -D "$scratch/merged" --register=no --keep-unit -b --quiet \
    "--bind-ro=$checkout:/usr/src/guardian" -- "--unit=$target"
"""


class ContainerError(RuntimeError):
    pass


def poll(probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """Call ``probe`` until it returns something true (not None, False, 0 or empty); return that.

    Raise ContainerError naming ``what`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ContainerError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def prerequisites() -> str | None:
    """None when a container can be booted here, else why not; installs systemd-container if missing."""
    if os.geteuid() != 0:
        return "booting a systemd container needs root (mount, unshare, systemd-nspawn)"
    for tool in ("unshare", "nsenter", "timeout", "systemctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if shutil.which("systemd-nspawn") is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "systemd-container"]):
            try:
                done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
            except (OSError, subprocess.TimeoutExpired) as e:
                return f"could not install systemd-container ({' '.join(argv)}: {e})"
            if done.returncode != 0:
                return f"could not install systemd-container ({' '.join(argv)}: {done.stderr.strip()[-300:]})"
        if shutil.which("systemd-nspawn") is None:
            return "systemd-container installed, but there is no systemd-nspawn"
    return None


def _parents() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            out[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def _descendants(root: int) -> list[int]:
    parents = _parents()
    found: list[int] = []
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found.extend(children)
        frontier.extend(children)
    return found


def _ns_pids(pid: int) -> list[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(p) for p in line.split()[1:]]
    except OSError:
        pass
    return []


class Container:
    """A booted container: ``run`` commands in it, ``path`` to its files, ``shutdown`` when done."""

    def __init__(self, scratch: Path, log: Path, proc: subprocess.Popen[bytes]) -> None:
        self.scratch = scratch
        self.log = log
        self.proc = proc  # `timeout`, parent of systemd-nspawn
        self.pid = 0  # the container's systemd, as the host sees it

    @classmethod
    def boot(cls, checkout: Path, *, lifetime: float = 900, timeout: float = 90) -> Container:
        """Boot a container, with ``checkout`` at SOURCE inside, and wait until its systemd is up (running
        or degraded); return it. ``lifetime`` bounds the container even if this process dies without
        shutting it down.
        """
        scratch = Path(tempfile.mkdtemp(prefix="guardian-proof-"))
        fd, log_name = tempfile.mkstemp(prefix="guardian-proof-", suffix=".log")
        with os.fdopen(fd, "wb") as log:
            proc = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--",
                    "sh",
                    "-c",
                    BOOT_SCRIPT,
                    "boot",
                    str(scratch),
                    BOOT_TARGET,
                    str(lifetime),
                    str(checkout),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        c = cls(scratch, Path(log_name), proc)
        try:
            c.pid = poll(c._find_init, timeout=timeout, what="the container's systemd to start")
            poll(c._booted, timeout=timeout, what="the container's systemd to finish booting")
        except BaseException:
            c.shutdown()
            raise
        return c

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise ContainerError(f"systemd-nspawn exited ({self.proc.returncode}):\n{self.log_tail()}")
        return True

    def _find_init(self) -> int | None:
        self._alive()
        return next((p for p in _descendants(self.proc.pid) if _ns_pids(p)[-1:] == [1]), None)

    def _booted(self) -> bool:
        self._alive()
        state = self.run("systemctl", "is-system-running", check=False, timeout=10).stdout.strip()
        return state in ("running", "degraded")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --- inside the container ----------------------------------------------------------------------

    def run(
        self, *argv: str, check: bool = True, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the container's mount and pid namespaces, at its root, as root."""
        env = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV)}
        env.update(PATH=SYSTEM_PATH, HOME="/root", LANG="C.UTF-8", SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
        cmd = ["nsenter", "-t", str(self.pid), "--mount", "--pid", "--root", "--wd", "--", *argv]
        done = subprocess.run(cmd, env=env, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise ContainerError(
                f"{' '.join(argv)} exited {done.returncode}\n"
                f"stdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-2000:]}"
            )
        return done

    def path(self, inside: str | Path) -> Path:
        """The host's path to ``inside``, a path in the container (for reading and writing its files)."""
        return Path(f"/proc/{self.pid}/root") / Path(inside).relative_to("/")

    def systemctl(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show`` of ``props`` as a dict."""
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props), check=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *args: str, since_us: int = 0) -> list[dict[str, Any]]:
        """``journalctl <args> -o json``, entries at or after ``since_us`` (µs of the realtime clock)."""
        out = self.run("journalctl", "--no-pager", "-o", "json", *args, check=False).stdout
        entries = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return [e for e in entries if int(e.get("__REALTIME_TIMESTAMP", "0")) >= since_us]

    def write(self, inside: str, text: str) -> None:
        """Write ``text`` to the file ``inside`` (its directories made as needed)."""
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    # --- the end -----------------------------------------------------------------------------------

    def shutdown(self, *, timeout: float = 60) -> None:
        """Power the container off; kill its systemd-nspawn (by pid) only if it does not go; clean up."""
        try:
            if self.proc.poll() is None:
                try:
                    if self.pid:
                        self.run("systemctl", "poweroff", "--no-block", check=False, timeout=20)
                    self.proc.wait(timeout=timeout if self.pid else 0)
                except (subprocess.TimeoutExpired, OSError):
                    self._kill()
        finally:
            # The tmpfs and the overlay lived in the private mount namespace and went with it.
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.log.unlink(missing_ok=True)

    def _kill(self) -> None:
        """SIGKILL the container's systemd (every process in its pid namespace dies with it) and our
        systemd-nspawn, by pid; then our `timeout` if need be."""
        for pid in _descendants(self.proc.pid):
            if _ns_pids(pid)[-1:] == [1] or _comm(pid) == "systemd-nspawn":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=20)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
