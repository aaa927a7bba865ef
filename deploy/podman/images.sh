#!/usr/bin/env bash
# Builds every image the local container stack runs, from what the package registries serve
# (no image registry is needed; README "Containers (Podman)"):
#   localhost/etl-debian:bookworm  Debian 12 minbase made with debootstrap, `podman import`ed;
#                                  the base of all the others
#   localhost/etl-rust:local       the builder: Debian + gcc/cmake/libssl-dev + the Rust toolchain
#                                  this machine has (rustup's stable, copied in; no download)
#   localhost/etl-pipe:local       the project's own Dockerfile, unchanged stages: the runtime
#                                  stage, user 10001 and entrypoint users get
#   localhost/etl-kafka:local      Apache Kafka (the Maven Central jars) on Debian's OpenJDK 17
#   localhost/etl-mariadb:local    Debian's MariaDB, standing in for MySQL 8.4
#   localhost/etl-ferretdb:local   FerretDB built from the Go module proxy, standing in for MongoDB
#   localhost/etl-apicurio:local   Apicurio Registry (Maven Central) on the machine's Java 21+
#
#   deploy/podman/images.sh          build what is missing or changed (layers are cached: a warm
#                                    run takes seconds)
#   deploy/podman/images.sh NAME...  only those (rust etl kafka mariadb ferretdb registry)
#   deploy/podman/images.sh --list   the images and their sizes
# Installs Podman, runc, debootstrap and podman-compose first when missing (lib.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
CONTEXTS="$PODMAN_HOME/contexts"

base_image() {
  podman image exists "$BASE_IMAGE" && return 0
  local mirror rootfs
  # The machine's own Debian mirror (apt sources), so debootstrap reaches what apt reaches.
  mirror="$(sed -n 's/^URIs: *\([^ ]*debian\)\/\{0,1\}$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)"
  [[ -n "$mirror" ]] || mirror="$(sed -n 's/^deb \(http[^ ]*\) bookworm .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n1)"
  [[ -n "$mirror" ]] || mirror="http://deb.debian.org/debian"
  rootfs="$PODMAN_HOME/rootfs"
  rm -rf "$rootfs"
  psay "debootstrap bookworm (minbase) from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$PODMAN_HOME/debootstrap.log" 2>&1 \
    || { tail -n 20 "$PODMAN_HOME/debootstrap.log" >&2; pdie "debootstrap failed"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null 2>&1
  rm -rf "$rootfs"
  psay "made $BASE_IMAGE"
}

build() { # build IMAGE CONTEXT [podman build args...]
  local image="$1" ctx="$2"; shift 2
  local t0=$SECONDS
  podman build --pull=never -q -t "$image" "$@" "$ctx" >"$PODMAN_HOME/build-$(basename "${image%%:*}").log" 2>&1 \
    || { tail -n 40 "$PODMAN_HOME/build-$(basename "${image%%:*}").log" >&2; pdie "building $image failed"; }
  psay "$image ready ($((SECONDS - t0)) s)"
}

# A build context: the image's Containerfile and scripts plus the cached installs, hard-linked
# (same filesystem) or copied.
context() { # context NAME -- prints the directory, filled with deploy/podman/images/NAME/*
  local dir="$CONTEXTS/$1"
  rm -rf "$dir"; mkdir -p "$dir"
  cp -a "$REPO/deploy/podman/images/$1/." "$dir/"
  echo "$dir"
}
link_in() { cp -al "$1" "$2" 2>/dev/null || cp -a "$1" "$2"; }

rust_image() {
  local toolchain version ctx
  toolchain="$(rustc --print sysroot 2>/dev/null)" || pdie "no Rust toolchain on this machine (rustup) to make the builder image from"
  version="$(rustc --version | awk '{print $2}')"
  # Rebuilt when the toolchain or the machine's extra CAs change.
  version="$version+ca.$(cat /usr/local/share/ca-certificates/*.crt 2>/dev/null | md5sum | cut -c1-8)"
  if [[ "$(podman image inspect --format '{{index .Labels "rust.version"}}' "$RUST_IMAGE" 2>/dev/null)" == "$version" ]]; then return 0; fi
  ctx="$(context rust)"
  mkdir -p "$ctx/rust"
  link_in "$toolchain/bin" "$ctx/rust/bin"
  link_in "$toolchain/lib" "$ctx/rust/lib"
  mkdir -p "$ctx/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$ctx/ca-certificates/" 2>/dev/null || true
  build "$RUST_IMAGE" "$ctx" --build-arg "BASE=$BASE_IMAGE" --label "rust.version=$version"
  rm -rf "$ctx"
}

etl_image() {
  # The project's Dockerfile as users build it, with the two base images swapped for the local
  # ones (build args; the defaults are rust:1-bookworm and debian:bookworm-slim).
  build "$ETL_IMAGE" "$REPO" -f "$REPO/Dockerfile" \
    --build-arg "BUILD_IMAGE=$RUST_IMAGE" --build-arg "RUNTIME_IMAGE=$BASE_IMAGE"
}

kafka_image() {
  local ctx; ctx="$(context kafka)"
  link_in "$CACHE/kafka-$KAFKA_VERSION/libs" "$ctx/libs"
  link_in "$CACHE/log4j-slf4j-impl-2.24.3" "$ctx/log4j-binding"
  build "$KAFKA_IMAGE" "$ctx" --build-arg "BASE=$BASE_IMAGE"
}

mariadb_image() { build "$MARIADB_IMAGE" "$(context mariadb)" --build-arg "BASE=$BASE_IMAGE"; }

ferretdb_image() {
  local ctx; ctx="$(context ferretdb)"
  link_in "$CACHE/ferretdb-$FERRETDB_VERSION/ferretdb" "$ctx/ferretdb"
  build "$FERRETDB_IMAGE" "$ctx" --build-arg "BASE=$BASE_IMAGE"
}

registry_image() {
  local ctx java_home; ctx="$(context apicurio)"
  java_home="$(find_java21_home)" || pdie "Apicurio needs a Java 21+ JDK under /usr/lib/jvm (Debian 12 has none)"
  link_in "$java_home" "$ctx/jdk"
  link_in "$CACHE/apicurio-$REGISTRY_VERSION" "$ctx/apicurio"
  build "$REGISTRY_IMAGE" "$ctx" --build-arg "BASE=$BASE_IMAGE"
}

find_java21_home() {
  local j v
  for j in /usr/lib/jvm/*/bin/java; do
    v="$("$j" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
    [[ "$v" =~ ^[0-9]+$ ]] && ((v >= 21)) && { dirname "$(dirname "$j")"; return 0; }
  done
  return 1
}

list() { podman images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^localhost/etl-' | sort; }

main() {
  if [[ "${1:-}" == --list ]]; then list; return 0; fi
  local t0=$SECONDS name names=("$@")
  ((${#names[@]})) || names=(rust etl kafka mariadb ferretdb registry)
  podman_setup
  # The installs the images are made from: the local stack's own (Maven Central, Go proxy), once.
  ETL_STACK_REGISTRY=1 bash "$REPO/deploy/local/stack.sh" install >/dev/null
  base_image
  for name in "${names[@]}"; do
    case "$name" in
      rust | etl | kafka | mariadb | ferretdb | registry) ;;
      *) pdie "unknown image '$name' (rust, etl, kafka, mariadb, ferretdb, registry)" ;;
    esac
    [[ "$name" == etl ]] && rust_image
    "${name}_image"
  done
  psay "images ready in $((SECONDS - t0)) s"
  list
}

# The same versions as the local stack's downloads the images are built from.
# shellcheck source=deploy/local/versions.sh
source "$(dirname "${BASH_SOURCE[0]}")/../local/versions.sh"
main "$@"
