# Shared by the Podman scripts (sourced): where things live, Podman's settings for this kind of
# machine, and the podman-compose install. Podman's own configuration files are left alone: the
# settings below are passed with CONTAINERS_CONF, so only these scripts see them.
STACK_HOME="${ETL_STACK_HOME:-$HOME/.local/share/etl-pipe-stack}"
CACHE="$STACK_HOME/cache"
PODMAN_HOME="$CACHE/podman"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export CONTAINERS_CONF="$PODMAN_HOME/containers.conf"
COMPOSE_VENV="$PODMAN_HOME/compose-venv"
PODMAN_COMPOSE_VERSION="1.6.0"
# The images the local override (deploy/compose.local.yml) names.
BASE_IMAGE="localhost/etl-debian:bookworm"
RUST_IMAGE="localhost/etl-rust:local"
ETL_IMAGE="localhost/etl-pipe:local"
KAFKA_IMAGE="localhost/etl-kafka:local"
MARIADB_IMAGE="localhost/etl-mariadb:local"
FERRETDB_IMAGE="localhost/etl-ferretdb:local"
REGISTRY_IMAGE="localhost/etl-apicurio:local"

psay() { printf '[podman] %s\n' "$*"; }
pdie() { printf '[podman] error: %s\n' "$*" >&2; exit 1; }

podman_setup() { # installs podman, runc, debootstrap (Debian) and podman-compose (PyPI) once
  mkdir -p "$PODMAN_HOME"
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
    command -v apt-get >/dev/null || pdie "podman, runc and debootstrap are needed (Debian: apt-get install podman runc debootstrap)"
    psay "installing podman, runc, debootstrap (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc debootstrap >"$PODMAN_HOME/apt.log" 2>&1 \
      || { apt-get update -q >>"$PODMAN_HOME/apt.log" 2>&1 \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc debootstrap >>"$PODMAN_HOME/apt.log" 2>&1; } \
      || { tail -n 20 "$PODMAN_HOME/apt.log" >&2; pdie "apt-get install podman runc debootstrap failed"; }
  fi
  # crun (Podman's default runtime) fails on this kind of host ("cgroups in hybrid mode not
  # supported"); runc works. Podman's default ulimits exceed the sandbox's hard limits, and a
  # container may not raise them: stay at or below `ulimit -Hn` / `ulimit -Hu`.
  local nofile nproc
  nofile="$(ulimit -Hn)"; nproc="$(ulimit -Hu)"
  [[ "$nofile" == unlimited || "$nofile" -gt 65536 ]] && nofile=65536
  # nproc above ~20 000 is refused here even below the hard limit (runc: "error setting rlimit type 6")
  [[ "$nproc" == unlimited || "$nproc" -gt 16384 ]] && nproc=16384
  cat >"$CONTAINERS_CONF.tmp" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
CONF
  mv "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"
  if [[ ! -x "$COMPOSE_VENV/bin/podman-compose" ]]; then
    psay "installing podman-compose $PODMAN_COMPOSE_VERSION (PyPI) into $COMPOSE_VENV"
    python3 -m venv "$COMPOSE_VENV"
    "$COMPOSE_VENV/bin/pip" install -q "podman-compose==$PODMAN_COMPOSE_VERSION" >"$PODMAN_HOME/pip.log" 2>&1 \
      || { tail -n 20 "$PODMAN_HOME/pip.log" >&2; pdie "pip install podman-compose failed"; }
  fi
}

pcompose() { "$COMPOSE_VENV/bin/podman-compose" "$@"; }
