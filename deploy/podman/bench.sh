#!/usr/bin/env bash
# Records/s through the container stack with 1 and with 3 clean containers (README "Containers
# (Podman)"): for each clean count, a fresh project (volumes removed), the sample API serving
# N clean records without faults or rate limit, every other stage at its compose default; the
# rate is the rows written over the time from the first MySQL row to the last (so start-up is
# not counted; MySQL is the sink the rate is read at). A benchmark, not a test: run it on an
# idle machine.
#
#   deploy/podman/bench.sh [--records N] [--clean "1 3"]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
records=100000 cleans="1 3"
while (($#)); do
  case "$1" in
    --records) records="$2"; shift 2 ;;
    --clean) cleans="$2"; shift 2 ;;
    *) echo "usage: $0 [--records N] [--clean \"1 3\"]" >&2; exit 2 ;;
  esac
done
export ETL_COMPOSE_PROJECT=etl-bench
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
export ETL_COMPOSE_FILES="$tmp/bench.yml"
pw="$(cat "$REPO/deploy/secrets/mysql_password.txt")"
rows() { MYSQL_PWD="$pw" mariadb -h127.0.0.1 -P23306 -uetl etl -N -e 'SELECT COUNT(*) FROM league_entry' 2>/dev/null || echo 0; }
now() { date +%s.%N; }
calc() { python3 -c "print(round($1))"; }
printf '%-8s %10s %12s %16s %8s\n' clean rows healthy_s end_to_end_rec/s load1
for k in $cleans; do
  cat >"$tmp/bench.yml" <<YML
services:
  sample-api:
    command: ["sample-api", "--host", "0.0.0.0", "--port", "8080", "--records", "$records", "--page-size", "200",
              "--queues", "RANKED_SOLO_5x5", "--tiers", "DIAMOND,EMERALD", "--divisions", "I",
              "--fail-rate", "0", "--malformed-rate", "0", "--missing-rate", "0"]
  extract:
    environment:
      ETL__EXTRACT__VARS__QUEUE: '["RANKED_SOLO_5x5"]'
      ETL__EXTRACT__VARS__TIER: '["DIAMOND", "EMERALD"]'
      ETL__EXTRACT__VARS__DIVISION: '["I"]'
      ETL__EXTRACT__RATE_LIMIT: "0"
  clean:
    deploy: {mode: replicated, replicas: $k}
YML
  bash "$REPO/deploy/podman/stack.sh" down --volumes >/dev/null
  t0="$(now)"
  bash "$REPO/deploy/podman/stack.sh" up >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log" >&2; exit 1; }
  healthy="$(calc "$(now) - $t0")"
  # Done when the row count stands still for 10 s (a few records may be quarantined).
  first="" first_n=0 last="" last_n=0 still=0
  deadline=$((SECONDS + 900))
  while ((SECONDS < deadline)); do
    n="$(rows)"
    [[ -z "$first" && "$n" -gt 0 ]] && first="$(now)" first_n="$n"
    if [[ "$n" -gt "$last_n" ]]; then last="$(now)" last_n="$n" still=0
    elif [[ "$n" -gt 0 ]]; then still=$((still + 1)); fi
    ((still >= 20)) && break
    sleep 0.5
  done
  [[ "$last_n" -gt 0 && "$still" -ge 20 ]] || { echo "the rows did not settle within 15 min ($last_n)" >&2; exit 1; }
  rate="$(calc "($last_n - $first_n) / ($last - $first)")"
  printf '%-8s %10s %12s %16s %8s\n' "$k" "$last_n" "$healthy" "$rate" "$(cut -d' ' -f1 /proc/loadavg)"
done
bash "$REPO/deploy/podman/stack.sh" down --volumes >/dev/null
