"""One evaluation's view of the bot: its paths, the clock read once, and probes cached so that
every check reads each file (and walks /proc) at most once.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from guardian.config import Config
from guardian.fsutil import read_small_text, unreadable_reason
from guardian.state import ClosedMemo, Loaded, Positions, load_json_object, load_positions

SLOT_NAME_MAX = 4096  # DEPLOYED_SLOT and PREVIOUS_SLOT hold one short line


@dataclass(frozen=True)
class SlotInfo:
    """Where the deployment link points, or why it is unusable (``problem``)."""

    link: Path
    slots_dir: Path
    target: Path | None  # the resolved slot directory
    name: str | None
    problem: str | None
    deployed: str | None  # the slot the operator deployed (config or DEPLOYED_SLOT), if named
    deployed_problem: str | None = None  # why DEPLOYED_SLOT could not be read (then deployed names no slot)


@dataclass(frozen=True)
class BotProcess:
    pid: int
    cmdline: tuple[str, ...]
    cwd: str | None
    slot: str | None  # the slot its cwd or code lies in
    in_unit: bool  # belongs to the bot unit's own cgroup
    started: float | None = None  # its start time (Unix seconds), for the start-up grace period


class Context:
    def __init__(self, cfg: Config, *, now: datetime | None = None, closed_memo: ClosedMemo | None = None) -> None:
        self.cfg = cfg
        self.now = now or datetime.now(UTC)
        self.today = self.now.date().isoformat()
        self.home = cfg.bot.home
        self.slots_dir = self.home / cfg.bot.slots_dir
        self.link = self.home / cfg.bot.current_link
        self.data_in_slot = cfg.bot.data is None
        self.data = cfg.bot.data if cfg.bot.data is not None else self.link
        self.max_bytes = cfg.files.max_state_mb * 1024 * 1024
        f = cfg.files
        self.positions_path = self.data / f.positions
        self.portfolio_path = self.data / f.portfolio
        self.heartbeats_dir = self.data / f.heartbeats
        self.wal_path = self.data / f.wal
        self.stop_path = self.data / f.emergency_stop
        self.backups_dir = self.data / f.backups
        self.alerts_path = self.data / (cfg.alerts.jsonl or f.alerts)
        # What one check probed that another (or the daemon) needs again: read once per evaluation.
        self.memo: dict[str, Any] = {}
        # Shared by a caller's successive evaluations (the daemon's): the closed list it last decoded.
        self.closed_memo = closed_memo

    def rel(self, path: Path) -> str:
        """A path as an operator reads it: relative to the data root or the home when inside them."""
        if path == self.data:
            return "data root"
        for root in (self.data, self.home):
            try:
                return str(path.relative_to(root))
            except ValueError:
                continue
        return str(path)

    def leads_outside(self, directory: Path) -> str | None:
        """Why writing in ``directory`` would leave the bot's tree, or None: a directory on its way is a
        symlink out of the home and the data root. As root, writing through it could change any file."""
        try:
            real = directory.resolve()
            roots = (self.home.resolve(), self.data.resolve())
        except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop
            return f"{self.rel(directory)} cannot be resolved ({e}): nothing is written through it"
        if any(real.is_relative_to(r) for r in roots):
            return None
        return f"{self.rel(directory)} leads to {real}, outside the bot's tree: nothing is written through it"

    @property
    def mode(self) -> str:
        return self.cfg.bot.mode

    @functools.cached_property
    def slot(self) -> SlotInfo:
        deployed = self.cfg.bot.deployed_slot
        deployed_problem = None
        if deployed is None:
            try:
                text = read_small_text(self.home / self.cfg.bot.deployed_slot_file, max_bytes=SLOT_NAME_MAX)
                deployed = text.strip() or None
            except (FileNotFoundError, NotADirectoryError):
                deployed = None
            except (OSError, UnicodeDecodeError) as e:
                # Not "no slot named": a name that matches no slot, so the link cannot pass as the deployed one.
                deployed, deployed_problem = f"<unreadable {self.cfg.bot.deployed_slot_file}>", unreadable_reason(e)

        def bad(problem: str) -> SlotInfo:
            return SlotInfo(self.link, self.slots_dir, None, None, problem, deployed, deployed_problem)

        if not self.link.is_symlink():
            return bad("does not exist" if not os.path.lexists(self.link) else "is not a symlink")
        try:
            target = self.link.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError):
            return bad(f"is dangling (points to {os.readlink(self.link)})")
        except (OSError, RuntimeError) as e:
            return bad(f"cannot be resolved ({e})")
        slots = self.slots_dir.resolve()
        if target.parent != slots:
            return bad(f"points to {target}, which is not a slot in {slots}")
        if not target.is_dir():
            return bad(f"points to {target}, which is not a directory")
        return SlotInfo(self.link, self.slots_dir, target, target.name, None, deployed, deployed_problem)

    @functools.cached_property
    def positions(self) -> tuple[Loaded, Positions | None]:
        return load_positions(self.positions_path, today=self.today, max_bytes=self.max_bytes, memo=self.closed_memo)

    @functools.cached_property
    def portfolio(self) -> Loaded:
        return load_json_object(
            self.portfolio_path, required=("balance", "open_positions_count"), max_bytes=self.max_bytes
        )

    @functools.cached_property
    def bot_processes(self) -> list[BotProcess]:
        from guardian.probes import find_bot_processes

        return find_bot_processes(self)

    def forget_processes(self) -> None:
        """Drop the cached process list (after a remedy ended a process)."""
        self.__dict__.pop("bot_processes", None)

    @functools.cached_property
    def lock_holders(self) -> dict[tuple[int, int], list[int]]:
        from guardian.probes import read_lock_holders

        return read_lock_holders()

    def extra(self) -> dict[str, Any]:
        return {"data_root": str(self.data), "mode": self.mode}
