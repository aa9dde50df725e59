#!/usr/bin/env bash
# The main job on a bundled example: build a demo bot tree, run `guardian check` and `guardian gate`
# on it, then break it the ways the audit fears and show what guardian says and does.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
G=.venv/bin/guardian
DEMO=$(mktemp -d /tmp/guardian-demo.XXXXXX)
run() { echo; echo "\$ guardian $*"; "$G" --config "$DEMO/guardian.yaml" "$@"; echo "(exit $?)"; }

echo "== a healthy bot tree in $DEMO (1000 closed positions, paper mode)"
.venv/bin/python -m guardian.demo "$DEMO/bot" --closed 1000 --config "$DEMO/guardian.yaml" >/dev/null
run check
run gate

echo; echo "== cold start: the data root emptied, stale heartbeat left behind"
D="$DEMO/bot/trading-bot-current"
rm -rf "$D/logs" "$D/state/wal" "$D/configs"
echo '{"component": "bot_cycle", "pid": 999999, "ts": "2020-01-01T00:00:00Z"}' > "$D/state/heartbeats/bot_cycle.json"
run check
run gate

echo; echo "== real mode, a duplicate position and a mid-trade crash: the gate refuses"
.venv/bin/python -m guardian.demo "$DEMO/bot2" --mode real --config "$DEMO/guardian.yaml" >/dev/null
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
run heal --dry-run
echo; echo "== the alert log: $D/logs/operator_alerts.jsonl (last 3 lines)"
tail -n 3 "$D/logs/operator_alerts.jsonl"
rm -rf "$DEMO"
