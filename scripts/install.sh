#!/usr/bin/env bash
# Install guardian on this host, as root; idempotent: run it again to upgrade, with the same options.
#
#   scripts/install.sh [--home DIR] [--mode paper|real] [--user NAME] [--instance NAME] [--python PY]
#   scripts/install.sh --uninstall [--instance NAME]
#   scripts/install.sh --print-dropin [--home DIR] [--user NAME] [--instance NAME]   (writes nothing)
#
# Installs: a virtual environment in /opt/guardian (from this checkout), /usr/local/bin/guardian,
# /etc/guardian/guardian.yaml from config/guardian.yaml (an existing config is never overwritten),
# guardian.service with this host's user and home in guardian.service.d/50-install.conf, the gate drop-in
# tradingbot.service.d/10-guardian-gate.conf, guardian's state directory; then `systemctl daemon-reload` where
# systemd runs. It enables and starts nothing: `systemctl enable --now guardian` does (a running guardian
# is restarted onto the new version).
#
# --instance NAME: one of several bots on this host. guardian@.service and tradingbot@.service.d/'s gate,
# /etc/guardian/NAME.yaml (bot.unit tradingbot@NAME.service, guardian.state_dir /var/lib/guardian/NAME),
# guardian@NAME.service.d/50-install.conf; the home defaults to /srv/tradingbot-NAME.
#
# --user NAME: who guardian runs as (and owns its state). Default: the owner of the bot's data root
# (<home>/trading-bot-current), else the user `tradingbot` if it exists, else root. The bot's own user is
# least privilege: guardian then needs no capability to read, repair and signal what is the bot's.
#
# --uninstall stops guardian and removes what this script installed (with --instance: that instance only);
# it keeps /etc/guardian, /var/lib/guardian and the backups in the bot's data root.
#
# pip reads its usual settings: PIP_INDEX_URL, or PIP_NO_INDEX=1 with PIP_FIND_LINKS=DIR on a host offline.
set -euo pipefail

PREFIX=/opt/guardian
UNIT_DIR=/etc/systemd/system
CONF_DIR=/etc/guardian
STATE_ROOT=/var/lib/guardian
BIN_LINK=/usr/local/bin/guardian
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

home="" mode=paper user="" instance="" python="" uninstall=0 print_dropin=0

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }
systemd_runs() { [ -d /run/systemd/system ]; }
need_root() { [ "$(id -u)" -eq 0 ] || die "run me as root (I write /opt, /etc and /var/lib)"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --home) home=${2:?--home needs a directory}; shift 2 ;;
        --mode) mode=${2:?--mode needs paper or real}; shift 2 ;;
        --user) user=${2:?--user needs a user name}; shift 2 ;;
        --instance) instance=${2:?--instance needs a name}; shift 2 ;;
        --python) python=${2:?--python needs an interpreter}; shift 2 ;;
        --uninstall) uninstall=1; shift ;;
        --print-dropin) print_dropin=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

case "$mode" in paper | real) ;; *) die "--mode must be paper or real, got '$mode'" ;; esac
if [ -n "$instance" ]; then
    # A systemd instance name that is also a plain file name: no escaping needed anywhere.
    [[ "$instance" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] || die "--instance: letters, digits, '_', '.' and '-' only"
    unit="guardian@$instance.service"
    conf="$CONF_DIR/$instance.yaml"
    state_dir="$STATE_ROOT/$instance"
    bot_unit="tradingbot@$instance.service"
    bot_unit_file="tradingbot@.service"
    gate_dir="$UNIT_DIR/tradingbot@.service.d"
    shipped_unit="guardian@.service"
    home=${home:-/srv/tradingbot-$instance}
else
    unit="guardian.service"
    conf="$CONF_DIR/guardian.yaml"
    state_dir="$STATE_ROOT"
    bot_unit="tradingbot.service"
    bot_unit_file="tradingbot.service"
    gate_dir="$UNIT_DIR/tradingbot.service.d"
    shipped_unit="guardian.service"
    home=${home:-/srv/tradingbot}
fi
[[ "$home" = /* ]] || die "--home must be an absolute path, got '$home'"
home=${home%/}
dropin_dir="$UNIT_DIR/$unit.d"

# --- uninstall ----------------------------------------------------------------------------------------

stop_and_disable() {  # units...
    systemctl disable --quiet "$@" 2>/dev/null || true
    if systemd_runs; then systemctl stop "$@" 2>/dev/null || true; fi
}

remove_file() {  # path: remove it, and its directory when that is a drop-in directory left empty
    if [ -e "$1" ] || [ -L "$1" ]; then rm -f "$1" && say "removed $1"; fi
    case "$(dirname "$1")" in *.d) rmdir "$(dirname "$1")" 2>/dev/null || true ;; esac
}

if [ "$uninstall" -eq 1 ]; then
    need_root
    if [ -n "$instance" ]; then
        stop_and_disable "$unit"
        remove_file "$dropin_dir/50-install.conf"
    else
        instances=()
        for d in "$UNIT_DIR"/guardian@?*.service.d; do [ -d "$d" ] && instances+=("$(basename "$d" .d)"); done
        stop_and_disable guardian.service "${instances[@]}"
        for f in "$UNIT_DIR/guardian.service" "$UNIT_DIR/guardian@.service" \
            "$UNIT_DIR/guardian.service.d/50-install.conf" \
            "$UNIT_DIR/tradingbot.service.d/10-guardian-gate.conf" \
            "$UNIT_DIR/tradingbot@.service.d/10-guardian-gate.conf"; do
            remove_file "$f"
        done
        for d in "${instances[@]}"; do remove_file "$UNIT_DIR/$d.d/50-install.conf"; done
        if [ "$(readlink "$BIN_LINK" 2>/dev/null)" = "$PREFIX/bin/guardian" ]; then remove_file "$BIN_LINK"; fi
        if [ -d "$PREFIX" ]; then rm -rf "$PREFIX" && say "removed $PREFIX"; fi
    fi
    if systemd_runs; then systemctl daemon-reload; fi
    say "kept $CONF_DIR, $STATE_ROOT and the backups in the bot's data root"
    exit 0
fi

# --- who guardian runs as, and with which write access ---------------------------------------------------

if [ -z "$user" ]; then
    if [ -e "$home/trading-bot-current" ]; then
        user=$(stat -L -c %U "$home/trading-bot-current")
    elif id -u tradingbot >/dev/null 2>&1; then
        user=tradingbot
    else
        user=root
    fi
fi
id -u "$user" >/dev/null 2>&1 || die "no user '$user' on this host: create it, or pass --user"
group=$(id -gn "$user")

dropin() {  # 50-install.conf: this host's values over the shipped unit
    echo "# Written by scripts/install.sh: this host's values for $unit. Re-run the installer to change them."
    echo "[Service]"
    echo "User=$user"
    echo "Group=$group"
    echo "# The bot's slots: its data root is the current one."
    echo "ReadWritePaths="
    echo "ReadWritePaths=-$home/slots"
    case "$home/" in
        /home/* | /root/* | /run/user/*)
            echo "# The bot lives under a home directory: visible, read-only but for the slots."
            echo "ProtectHome=read-only" ;;
    esac
    if [ "$user" = root ]; then
        echo "# As root, guardian chowns a directory it creates to the data root's owner."
        echo "SystemCallFilter=@chown"
    fi
}

if [ "$print_dropin" -eq 1 ]; then dropin; exit 0; fi
need_root

# --- the virtual environment ----------------------------------------------------------------------------

if [ -z "$python" ]; then
    # The system's Python: an interpreter under /root (pyenv) is out of the sandbox's and the bot user's reach.
    python=/usr/bin/python3
    [ -x "$python" ] || python=$(command -v python3) || die "no python3: pass --python"
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
    die "$python is not Python 3.11 or newer: pass --python"
base=$("$python" -c 'import sys; print(sys.base_prefix)')
case "$base/" in
    /root/* | /home/* | /run/user/*)
        # guardian.service has ProtectHome=yes, and the bot's user cannot enter /root anyway.
        die "$python lives in $base, which the service cannot reach: pass --python /usr/bin/python3.11 (or similar)" ;;
esac

if [ ! -x "$PREFIX/bin/python" ]; then
    say "creating the virtual environment $PREFIX ($python)"
    "$python" -m venv "$PREFIX"
fi
# Built from a copy, so the checkout gets no build/ or egg-info of root's (and may be read-only).
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
tar -C "$SRC" --exclude=__pycache__ -cf - pyproject.toml README.md guardian | tar -C "$build" -xf -
say "installing guardian from $SRC into $PREFIX"
"$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check "$build"
ln -sfn "$PREFIX/bin/guardian" "$BIN_LINK"

# --- config and state ----------------------------------------------------------------------------------

install -d -m 0755 "$CONF_DIR"
if [ -e "$conf" ]; then
    say "kept $conf (never overwritten; --home and --mode apply to a new config only)"
else
    # The documented example, every key with its default, with this bot's values filled in.
    "$PREFIX/bin/python" - "$SRC/config/guardian.yaml" "$conf.new" "$home" "$mode" "$bot_unit" "$state_dir" <<'PY'
import json, re, sys
example, out, home, mode, unit, state_dir = sys.argv[1:]
text = open(example, encoding="utf-8").read()
for key, value in (("home", home), ("mode", mode), ("unit", unit), ("state_dir", state_dir)):
    # JSON strings are YAML double-quoted scalars: any path is written safely.
    text, n = re.subn(rf"^(  {key}: )\S+", lambda m: m.group(1) + json.dumps(value), text, count=1, flags=re.M)
    assert n == 1, f"{key} not found in {example}"
open(out, "w", encoding="utf-8").write(text)
PY
    chown "root:$group" "$conf.new"
    chmod 0640 "$conf.new"
    mv "$conf.new" "$conf"
    say "wrote $conf (bot.home $home, bot.mode $mode)"
fi
if ! "$PREFIX/bin/guardian" --config "$conf" validate-config >/dev/null; then
    say "warning: $conf is invalid: the gate refuses every start and guardian will not run until it is fixed"
fi
# The daemon's StateDirectory=, made now: the gate, in the bot's unit, shares it before guardian first runs.
# As in the units: 0755 for /var/lib/guardian, which holds the instances' directories, 0750 for those.
install -d -m 0755 "$STATE_ROOT"
if [ -n "$instance" ]; then state_mode=0750; else state_mode=0755; fi
install -d -m "$state_mode" -o "$user" -g "$group" "$state_dir"

# --- the units -----------------------------------------------------------------------------------------

install -m 0644 "$SRC/systemd/$shipped_unit" "$UNIT_DIR/$shipped_unit"
install -d -m 0755 "$gate_dir" "$dropin_dir"
install -m 0644 "$SRC/systemd/$(basename "$gate_dir")/10-guardian-gate.conf" "$gate_dir/10-guardian-gate.conf"
dropin >"$dropin_dir/50-install.conf.new"
chmod 0644 "$dropin_dir/50-install.conf.new"
mv "$dropin_dir/50-install.conf.new" "$dropin_dir/50-install.conf"
say "installed $UNIT_DIR/$shipped_unit ($unit runs as $user), $gate_dir/10-guardian-gate.conf"

if systemd_runs; then
    systemctl daemon-reload
    systemctl try-restart "$unit"
else
    say "systemd is not running here: run 'systemctl daemon-reload' once it is"
fi
if ! [ -e "$UNIT_DIR/$bot_unit_file" ] && ! [ -e "/lib/systemd/system/$bot_unit_file" ]; then
    say "note: no $bot_unit_file installed yet; systemd/$bot_unit_file in the checkout is an example"
fi
say "done: systemctl enable --now $unit; journalctl -u $unit"
