#!/usr/bin/env bash
# Builds baselines/league.json, the score stage's reference distribution for the demo: the
# sample API's undrifted data (seed 42), mapped to the cleaned field names, profiled with
# `etl-pipe profile --save-baseline`. Re-run after changing the sample data or the schema.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build -q
BIN=./target/debug/etl-pipe
PORT="${PORT:-18080}"
TMP="$(mktemp -d)"
"$BIN" sample-api --port "$PORT" --records 20000 --page-size 1000 --seed 7 --token t >"$TMP/api.log" 2>&1 &
API=$!
trap 'kill $API 2>/dev/null || true; rm -rf "$TMP"' EXIT
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
python3 - "$PORT" >"$TMP/ref.jsonl" <<'PY'
import json, sys, urllib.request
port = sys.argv[1]
tiers = ["DIAMOND", "EMERALD", "PLATINUM", "GOLD", "SILVER", "BRONZE", "IRON"]
for tier in tiers:
    for div in ["I", "II", "III", "IV"]:
        page = 1
        while True:
            url = f"http://127.0.0.1:{port}/lol/league-exp/v4/entries/RANKED_SOLO_5x5/{tier}/{div}?page={page}"
            req = urllib.request.Request(url, headers={"X-Riot-Token": "t"})
            rows = json.load(urllib.request.urlopen(req))
            if not rows:
                break
            for r in rows:
                w, l = r["wins"], r["losses"]
                print(json.dumps({
                    "summoner_name": r.get("summonerName"), "league_points": r["leaguePoints"],
                    "wins": w, "win_rate": (w / (w + l)) if w + l else None,
                    "veteran": r.get("veteran"), "inactive": r.get("inactive"),
                    "fresh_blood": r.get("freshBlood"), "hot_streak": r.get("hotStreak"),
                }))
            page += 1
PY
"$BIN" profile "$TMP/ref.jsonl" --save-baseline baselines/league.json
echo "wrote baselines/league.json from $(wc -l <"$TMP/ref.jsonl") records"
