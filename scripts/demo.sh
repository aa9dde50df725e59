#!/usr/bin/env bash
# The main job on a bundled example: build a demo bot tree, run `guardian check` and `guardian gate`
# on it, then break it the ways the audit fears and show what guardian says and does.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
G=.venv/bin/guardian
DEMO=$(mktemp -d /tmp/guardian-demo.XXXXXX)
CFG="$DEMO/guardian.yaml"
run() { echo; echo "\$ guardian $*"; "$G" --config "$CFG" "$@"; echo "(exit $?)"; }
build() { .venv/bin/python -m guardian.demo "$DEMO/$1" --config "$DEMO/$1.yaml" "${@:2}" >/dev/null; CFG="$DEMO/$1.yaml"; }

echo "== a healthy bot tree in $DEMO/bot (1000 closed positions, paper mode)"
build bot --closed 1000
run check
run gate

echo; echo "== a new bot's first start: no state yet, and no trace of an earlier life: a cold start"
build new
rm -rf "$DEMO/new/trading-bot-current/logs" "$DEMO/new/trading-bot-current/state/wal"
run gate

echo; echo "== the first bot, after it ran, loses logs/ (positions and portfolio), in real mode"
build bot-real --mode real
run gate >/dev/null 2>&1  # its first start: allowed, and remembered
rm -rf "$DEMO/bot-real/trading-bot-current/logs"
run gate

echo; echo "== real mode, a duplicate position and a mid-trade crash: the gate refuses"
build bot2 --mode real
D="$DEMO/bot2/trading-bot-current"
.venv/bin/python - "$D" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
p = json.loads((d / "logs/positions_futures.json").read_text())
dup = dict(p["open_positions"][0], id="dup-1")
p["open_positions"].append(dup)
(d / "logs/positions_futures.json").write_text(json.dumps(p))
pf = json.loads((d / "logs/portfolio_futures.json").read_text()); pf["open_positions_count"] = 2
(d / "logs/portfolio_futures.json").write_text(json.dumps(pf))
with open(d / "state/wal/operations.wal", "a") as f:
    f.write(json.dumps({"id": "op-9", "op": "POSITION_OPEN", "status": "pending", "ts": "2026-11-21T07:00:00Z"}) + "\n")
PY
run gate
echo; echo "== the alert log: $D/logs/operator_alerts.jsonl (last 2 lines)"
tail -n 2 "$D/logs/operator_alerts.jsonl"
rm -rf "$DEMO"
