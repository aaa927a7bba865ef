#!/usr/bin/env bash
# Validates the deployment files that cannot run here (no Docker engine, no cluster):
#   Dockerfile          parsed by the official BuildKit parser (PyPI `dockerfile`), stages checked
#   docker-compose.yml  against the Compose Specification JSON schema (check-jsonschema, vendored)
#                       and loaded by compose-go, the library Docker Compose uses (deploy/compose-check)
#   k8s/*.yaml          core objects against the Kubernetes 1.37 OpenAPI schemas (kubernetes-validate, strict)
# The tools are installed once into a virtualenv under $ETL_STACK_HOME/cache.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${ETL_STACK_HOME:-$HOME/.local/share/etl-pipe-stack}/cache/validate-venv"
if [[ ! -x "$VENV/bin/check-jsonschema" || ! -x "$VENV/bin/kubernetes-validate" ]]; then
  command -v python3 >/dev/null || { echo "python3 not found: install Python 3 (Debian: python3 python3-venv)" >&2; exit 1; }
  echo "[validate] installing validators into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "dockerfile==3.4.0" "check-jsonschema==0.39.0" "kubernetes-validate==1.37.0"
fi
"$VENV/bin/python" - <<'PY'
import sys, dockerfile
cmds = dockerfile.parse_file("Dockerfile")
froms = [c for c in cmds if c.cmd.upper() == "FROM"]
assert len(froms) >= 2, "Dockerfile must be multi-stage"
users = [c for c in cmds if c.cmd.upper() == "USER"]
assert users and not users[-1].value[0].startswith(("root", "0")), "runtime stage must run as a non-root user"
assert any(c.cmd.upper() == "ENTRYPOINT" for c in cmds), "Dockerfile needs an ENTRYPOINT"
print(f"[validate] Dockerfile ok: {len(froms)} stages, user {users[-1].value[0]}")
PY
compose_files=(deploy/docker-compose.yml)
[[ -f kafdrop/docker-compose.yml ]] && compose_files+=(kafdrop/docker-compose.yml)
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "${compose_files[@]}"
# The same files loaded the way Docker Compose loads them (compose-go: interpolation, env_file,
# merge keys), when Go is available.
if command -v go >/dev/null; then
  abs=(); for f in "${compose_files[@]}"; do abs+=("$PWD/$f"); done
  (cd deploy/compose-check && go run . "${abs[@]}" >/dev/null) || { echo "[validate] compose-go rejected a compose file" >&2; exit 1; }
  echo "[validate] compose files load with compose-go"
fi
"$VENV/bin/kubernetes-validate" --strict --quiet deploy/k8s/etl-pipe.yaml
echo "[validate] deploy/k8s/etl-pipe.yaml ok (keda-scaledobjects.yaml is a CRD: not validated)"
