#!/usr/bin/env bash
# The production compose file (deploy/docker-compose.yml) run under Podman with the local images
# (deploy/compose.local.yml; build them first: deploy/podman/images.sh).
#
#   deploy/podman/stack.sh up                 everything, in dependency order, until every
#                                             container with a health check is healthy
#   deploy/podman/stack.sh health             run every health check once and show the states
#   deploy/podman/stack.sh scale SERVICE N    run N containers of a stage (more or fewer)
#   deploy/podman/stack.sh ps | logs SERVICE  what runs; a service's logs (all its containers)
#   deploy/podman/stack.sh down [--volumes]   stop and remove the containers (and the data)
#
# ETL_COMPOSE_PROJECT (default etl-pipe) names the project; ETL_COMPOSE_FILES adds compose files
# after the two (space separated; the container check adds its own).
#
# Why `up` runs in phases: podman-compose 1.6 ignores `condition: service_healthy` on Podman
# older than 4.6 (Debian 12 ships 4.3) and Podman runs health checks from systemd timers, which
# a machine without systemd does not have. So this script runs the health checks itself
# (`podman healthcheck run`) and starts each phase once the one before is healthy: brokers,
# registry, databases and the sample API; then `topics` (one-shot, must exit 0); then the
# consuming stages; extract, the source, last.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PROJECT="${ETL_COMPOSE_PROJECT:-etl-pipe}"
FILES=(-f "$REPO/deploy/docker-compose.yml" -f "$REPO/deploy/compose.local.yml")
for f in ${ETL_COMPOSE_FILES:-}; do FILES+=(-f "$f"); done
INFRA=(kafka-1 kafka-2 kafka-3 schema-registry mysql mongo sample-api)
STAGES=(clean score sink-mysql sink-mongo)

compose() { pcompose --no-ansi -p "$PROJECT" "${FILES[@]}" "$@"; }

containers() { # containers [SERVICE] -- names of the project's containers (of one service)
  local filter=(--filter "label=io.podman.compose.project=$PROJECT")
  [[ -n "${1:-}" ]] && filter+=(--filter "label=com.docker.compose.service=$1")
  podman ps -a "${filter[@]}" --format '{{.Names}}' | sort
}

health_state() { podman inspect --format '{{if .State.Healthcheck}}{{.State.Healthcheck.Status}}{{else}}none{{end}}' "$1" 2>/dev/null || echo gone; }
has_check() { [[ "$(podman inspect --format '{{if .Config.Healthcheck}}yes{{end}}' "$1" 2>/dev/null)" == yes ]]; }

check_once() { # check_once [SERVICE...] -- runs the health check of every running container
  # (of the services) that has one
  # (Podman ANDs label filters: one listing per service.)
  local c s services=("$@")
  ((${#services[@]})) || services=("")
  for s in "${services[@]}"; do
    for c in $(containers "$s"); do
      [[ "$(podman inspect --format '{{.State.Running}}' "$c" 2>/dev/null)" == true ]] || continue
      has_check "$c" && podman healthcheck run "$c" >/dev/null 2>&1 || true
    done
  done
}

wait_healthy() { # wait_healthy SECONDS SERVICE... -- every container of the services healthy
  local deadline=$((SECONDS + $1)) s c pending; shift
  while true; do
    check_once "$@"
    pending=()
    for s in "$@"; do
      for c in $(containers "$s"); do
        if has_check "$c"; then
          [[ "$(health_state "$c")" == healthy ]] || pending+=("$c")
        else
          [[ "$(podman inspect --format '{{.State.Running}}' "$c")" == true ]] || pending+=("$c")
        fi
      done
      [[ -n "$(containers "$s")" ]] || pending+=("$s (no container)")
    done
    ((${#pending[@]} == 0)) && return 0
    if ((SECONDS >= deadline)); then
      psay "not healthy after the wait: ${pending[*]}"
      for c in "${pending[@]}"; do podman logs --tail 15 "${c%% *}" 2>&1 | sed "s/^/  ${c%% *}: /" >&2 || true; done
      return 1
    fi
    sleep 3
  done
}

up() {
  local t0=$SECONDS rc
  podman image exists "$ETL_IMAGE" || pdie "no $ETL_IMAGE: build the images first (bash deploy/podman/images.sh)"
  psay "phase 1: ${INFRA[*]}"
  compose up -d --no-deps "${INFRA[@]}" >"$PODMAN_HOME/up-$PROJECT.log" 2>&1 \
    || { tail -n 30 "$PODMAN_HOME/up-$PROJECT.log" >&2; pdie "podman-compose up failed"; }
  wait_healthy 240 "${INFRA[@]}"
  psay "phase 2: topics apply"
  compose up -d --no-deps topics >>"$PODMAN_HOME/up-$PROJECT.log" 2>&1 \
    || { tail -n 30 "$PODMAN_HOME/up-$PROJECT.log" >&2; pdie "podman-compose up topics failed"; }
  rc="$(podman wait "$(containers topics | head -n1)")"
  [[ "$rc" == 0 ]] || { podman logs --tail 30 "$(containers topics | head -n1)" >&2; pdie "topics apply exited with $rc"; }
  psay "phase 3: ${STAGES[*]}"
  compose up -d --no-deps "${STAGES[@]}" >>"$PODMAN_HOME/up-$PROJECT.log" 2>&1 \
    || { tail -n 30 "$PODMAN_HOME/up-$PROJECT.log" >&2; pdie "podman-compose up (stages) failed"; }
  wait_healthy 180 "${STAGES[@]}"
  # The source last: nothing is pulled before every stage that carries it is ready.
  psay "phase 4: extract"
  compose up -d --no-deps extract >>"$PODMAN_HOME/up-$PROJECT.log" 2>&1 \
    || { tail -n 30 "$PODMAN_HOME/up-$PROJECT.log" >&2; pdie "podman-compose up extract failed"; }
  wait_healthy 120 extract
  psay "healthy after $((SECONDS - t0)) s"
  ps
}

scale() { # scale SERVICE N
  local s="$1" n="$2"
  [[ "$n" =~ ^[0-9]+$ ]] || pdie "scale: N must be a number, not '$n'"
  compose up -d --no-deps --no-recreate --scale "$s=$n" "$s" >>"$PODMAN_HOME/up-$PROJECT.log" 2>&1 \
    || { tail -n 30 "$PODMAN_HOME/up-$PROJECT.log" >&2; pdie "scaling $s to $n failed"; }
  # podman-compose starts the missing replicas but leaves extra ones running: stop those.
  local c i=0
  for c in $(containers "$s" | sort -t_ -k3 -n); do
    i=$((i + 1))
    ((i > n)) && podman stop -t 30 "$c" >/dev/null && podman rm "$c" >/dev/null
  done
  psay "$s: $(containers "$s" | wc -l) container(s)"
}

down() { # down [--volumes]
  # podman-compose's down removes the replicas the compose file declares, not the ones `scale`
  # added: every container of the project goes first (they would hold the network).
  local c
  for c in $(containers); do podman rm -f -t 20 "$c" >/dev/null 2>&1 || true; done
  compose down "$@" >/dev/null 2>&1 || true
  psay "down"
}

ps() { podman ps -a --filter "label=io.podman.compose.project=$PROJECT" --format 'table {{.Names}}\t{{.Status}}\t{{.Ports}}'; }

case "${1:-}" in
  up) up ;;
  health) check_once; ps ;;
  wait-healthy) shift; wait_healthy "${1:-180}" "${@:2}" ;;
  scale) scale "${2:?scale SERVICE N}" "${3:?scale SERVICE N}" ;;
  ps) ps ;;
  logs) for c in $(containers "${2:?logs SERVICE}"); do podman logs "$c" 2>&1 | sed "s/^/$c: /"; done ;;
  down) shift; down "$@" ;;
  *) echo "usage: $0 up|health|wait-healthy SECONDS SERVICE...|scale SERVICE N|ps|logs SERVICE|down [--volumes]" >&2; exit 2 ;;
esac
