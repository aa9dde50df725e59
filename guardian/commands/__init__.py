"""Every command, one module each (or one per family); the registry cli.py builds its parser from.

To add a command: write ``commands/<name>.py`` with ``COMMANDS = (Command(...),)`` and list the module
below. Each module imports what its work needs inside ``run``, so the gate loads none of the others'.
"""

from __future__ import annotations

from guardian.commands import alerts, backups, check, data_root, gate, heal, run, silence, status, stop, validate
from guardian.commands.base import Command

REGISTRY: tuple[Command, ...] = (
    *check.COMMANDS,
    *heal.COMMANDS,
    *gate.COMMANDS,
    *run.COMMANDS,
    *status.COMMANDS,
    *validate.COMMANDS,
    *backups.COMMANDS,
    *stop.COMMANDS,
    *data_root.COMMANDS,
    *silence.COMMANDS,
    *alerts.COMMANDS,
)
