#!/usr/bin/env bash
# Validates the deployment files that cannot run here (no Docker engine, no cluster):
#   Dockerfile          parsed by the official BuildKit parser (PyPI `dockerfile`), stages checked
#   docker-compose.yml  against the Compose Specification JSON schema (check-jsonschema, vendored)
#   compose.secure.yml  and loaded by compose-go, the library Docker Compose uses (deploy/compose-check):
#                       each file alone, and the secure override merged onto the base file as
#                       `docker compose -f docker-compose.yml -f compose.secure.yml` would, the
#                       merged model checked against the schema too
#   k8s/*.yaml          core objects against the Kubernetes 1.37 OpenAPI schemas (kubernetes-validate, strict)
#   secrets             no literal secret in an environment value of the secure compose project or
#                       of the Kubernetes manifest (only file paths, `{ file = … }`, `…__FILE`), no
#                       Secret object in the repository, each stage mounting only its own password
#                       (secure compose and Kubernetes), the secure init scripts parse (bash -n)
#   config              with an etl-pipe binary at hand (ETL_PIPE_BIN, or target/{release,debug}):
#                       `etl-pipe config check` of every stage's environment in the secure compose
#                       project and of every Kubernetes Deployment, secret files replaced by
#                       placeholders: the ETL__ variables and the ConfigMap parse into valid keys
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
compose_files=(deploy/docker-compose.yml deploy/compose.secure.yml)
[[ -f kafdrop/docker-compose.yml ]] && compose_files+=(kafdrop/docker-compose.yml)
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "${compose_files[@]}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# The same files loaded the way Docker Compose loads them (compose-go: interpolation, env_file,
# merge keys, several files merged), when Go is available.
merged=""
if command -v go >/dev/null; then
  projects=()
  # Each complete file alone (the override is not one: it only adds to the base file) ...
  for f in "${compose_files[@]}"; do [[ "$f" == deploy/compose.secure.yml ]] || projects+=("$PWD/$f"); done
  # ... and, last, base + secure override, merged in that order.
  projects+=("$PWD/deploy/docker-compose.yml,$PWD/deploy/compose.secure.yml")
  (cd deploy/compose-check && go run . -json "$tmp" "${projects[@]}" >/dev/null) || { echo "[validate] compose-go rejected a compose file" >&2; exit 1; }
  merged="$tmp/project-${#projects[@]}.json"
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$merged"
  echo "[validate] compose files load with compose-go (and docker-compose.yml + compose.secure.yml merged)"
else
  echo "[validate] go not found: compose-go loading and the merged secure project not checked" >&2
fi
"$VENV/bin/kubernetes-validate" --strict --quiet deploy/k8s/etl-pipe.yaml
echo "[validate] deploy/k8s/etl-pipe.yaml ok (keda-scaledobjects.yaml is a CRD: not validated)"
for f in deploy/secure-init/*.sh deploy/secrets/make-secure.sh; do bash -n "$f"; done
[[ ! -x deploy/secure-init/mysql-init.sh ]] || { echo "[validate] deploy/secure-init/mysql-init.sh must not be executable (the mysql entrypoint sources it only then)" >&2; exit 1; }

# ---------------------------------------------------------------- no literal secret, least privilege
"$VENV/bin/python" - deploy/compose.secure.yml "$merged" deploy/k8s/etl-pipe.yaml <<'PY'
import json, re, sys, tomllib, yaml

override_path, merged_path, k8s_path = sys.argv[1:4]
problems = []
# A name that says secret, and what may stand in such a variable instead of the secret itself.
SECRET_NAME = re.compile(r"pass(word)?|secret|token|credential|jaas|private", re.I)
SECRET_TEXT = re.compile(r"password\s*=|sasl\.jaas\.config|-----BEGIN", re.I)
PATH = re.compile(r"^(/run/secrets/|/var/run/secrets/|/etc/)\S+$")
FILE_TABLE = re.compile(r'^\{\s*file\s*=\s*"([^"]+)"\s*\}$')
FLAGS = {"", "yes", "no", "true", "false", "0", "1"}
# The apache/kafka image's SSL convention: *_CREDENTIALS name a file under /etc/kafka/secrets.
KAFKA_CREDENTIALS = {"KAFKA_SSL_KEYSTORE_CREDENTIALS", "KAFKA_SSL_KEY_CREDENTIALS", "KAFKA_SSL_TRUSTSTORE_CREDENTIALS"}

def env_problem(where, name, value, mounted=()):
    v = "" if value is None else str(value)
    if SECRET_TEXT.search(v):
        return f"{where}: {name} holds what looks like an inline secret"
    if not SECRET_NAME.search(name) or v.lower() in FLAGS:
        return None
    if name in KAFKA_CREDENTIALS:
        return None if f"/etc/kafka/secrets/{v}" in mounted else f"{where}: {name}={v} names no mounted file"
    m = FILE_TABLE.match(v)
    if m and PATH.match(m.group(1)):
        return None
    if PATH.match(v):
        return None
    return f"{where}: {name} is neither a file path nor {{ file = \"…\" }} (a literal secret?)"

# The override file itself, as written.
def mounted_files(body):
    out = set()
    for s in body.get("secrets") or []:
        s = {"source": s} if isinstance(s, str) else s
        out.add(s.get("target") or f"/run/secrets/{s['source']}")
    return out

override = yaml.safe_load(open(override_path))
for svc, body in (override.get("services") or {}).items():
    for name, value in (body.get("environment") or {}).items():
        if (p := env_problem(f"{override_path} {svc}", name, value, mounted_files(body))):
            problems.append(p)

STAGES = ["extract", "clean", "score", "sink-mysql", "sink-mongo"]
if merged_path:
    project = json.load(open(merged_path))
    services = project["services"]
    # The database passwords are resolved by their sink only; the base file's shared environment
    # names mysql.password's file in every stage, mounted in sink-mysql alone.
    resolved_only_by = {"ETL__MYSQL__PASSWORD": "sink-mysql", "ETL__MONGO__PASSWORD": "sink-mongo"}
    for svc, body in services.items():
        mounted = mounted_files(body)
        for name, value in (body.get("environment") or {}).items():
            if (p := env_problem(f"secure project {svc}", name, value, mounted)):
                problems.append(p)
        # A file-secret path in an environment value must be a secret this service mounts.
        for name, value in (body.get("environment") or {}).items():
            if resolved_only_by.get(name, svc) != svc:
                continue
            v = str(value or "")
            m = FILE_TABLE.match(v)
            path = m.group(1) if m else v
            if path.startswith("/run/secrets/") and path not in mounted:
                problems.append(f"secure project {svc}: {name} reads {path}, which it does not mount")
    # Least privilege: each stage mounts exactly its own Kafka password, the CA, and its database's.
    extra = {"extract": {"api_token"}, "sink-mysql": {"mysql_password"}, "sink-mongo": {"mongo_etl_sink_password"}}
    for stage in STAGES:
        body = services[stage]
        own = f"kafka_etl_{stage.replace('-', '_')}_password"
        have = {s["source"] for s in body.get("secrets") or []}
        want = {"etl_ca", own} | extra.get(stage, set())
        if have != want:
            problems.append(f"secure project {stage}: mounts {sorted(have)}, expected exactly {sorted(want)}")
        env = body.get("environment") or {}
        if env.get("ETL__KAFKA__CLIENT_OPTIONS__sasl.username") != f"etl-{stage}":
            problems.append(f"secure project {stage}: not its own Kafka principal etl-{stage}")
        if env.get("ETL__KAFKA__CLIENT_OPTIONS__sasl.password__FILE") != f"/run/secrets/{own}":
            problems.append(f"secure project {stage}: Kafka password not read from its own secret {own}")
        if env.get("ETL__KAFKA__CLIENT_OPTIONS__security.protocol") != "SASL_SSL":
            problems.append(f"secure project {stage}: Kafka not over SASL_SSL")
        if "acls" not in (body.get("depends_on") or {}):
            problems.append(f"secure project {stage}: does not wait for the acls one-shot")
    for broker in ("kafka-1", "kafka-2", "kafka-3"):
        env = services[broker]["environment"]
        if "PLAINTEXT" in env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "PLAINTEXT"):
            problems.append(f"secure project {broker}: a PLAINTEXT listener is left")
        if env.get("KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND") != "false" or "StandardAuthorizer" not in env.get("KAFKA_AUTHORIZER_CLASS_NAME", ""):
            problems.append(f"secure project {broker}: no StandardAuthorizer with allow.everyone.if.no.acl.found=false")
    if services["sink-mysql"]["environment"].get("ETL__MYSQL__SSL_MODE") not in ("verify_identity", "verify_ca"):
        problems.append("secure project sink-mysql: MySQL certificate not verified")
    if "tls=true" not in services["sink-mongo"]["environment"].get("ETL__MONGO__URI", ""):
        problems.append("secure project sink-mongo: MongoDB URI without tls=true")

# Kubernetes: no Secret object, no secret in env or the ConfigMap, one stage's password per pod.
def secret_refs(table, key=""):
    """(key, value) of every config key that names a secret and is not a `{ file = … }` table."""
    for k, v in table.items():
        full = f"{key}.{k}" if key else k
        if isinstance(v, dict):
            if set(v) == {"file"}:
                if not PATH.match(v["file"]):
                    yield full, v
            elif set(v) & {"env", "file"} and SECRET_NAME.search(k):
                yield full, v  # { env = … } or both: not a mounted file
            else:
                yield from secret_refs(v, full)
        elif SECRET_NAME.search(k):
            yield full, v

docs = [d for d in yaml.safe_load_all(open(k8s_path)) if d]
for d in docs:
    kind, name = d.get("kind"), d.get("metadata", {}).get("name")
    if kind == "Secret":
        problems.append(f"{k8s_path}: Secret {name} in the repository (create it with kubectl instead)")
    if kind == "ConfigMap":
        for fname, text in (d.get("data") or {}).items():
            if fname.endswith(".toml"):
                for key, _ in secret_refs(tomllib.loads(text)):
                    problems.append(f"{k8s_path} ConfigMap {name}/{fname}: {key} is not {{ file = \"/…\" }}")
    if kind != "Deployment":
        continue
    spec = d["spec"]["template"]["spec"]
    for c in spec["containers"]:
        for e in c.get("env") or []:
            if "secretKeyRef" in (e.get("valueFrom") or {}):
                problems.append(f"{k8s_path} {name}: {e['name']} from a Secret into the environment (mount it as a file)")
            elif (p := env_problem(f"{k8s_path} {name}", e["name"], e.get("value"))):
                problems.append(p)
        user = {e["name"]: e.get("value") for e in c.get("env") or []}.get("ETL__KAFKA__CLIENT_OPTIONS__sasl.username")
        if user != f"etl-{name}":
            problems.append(f"{k8s_path} {name}: Kafka user {user!r}, expected etl-{name}")
    secrets, modes = set(), set()
    for v in spec.get("volumes") or []:
        if "secret" in v:
            secrets.add(v["secret"]["secretName"]); modes.add(v["secret"].get("defaultMode"))
        for src in (v.get("projected") or {}).get("sources") or []:
            if "secret" in src:
                secrets.add(src["secret"]["name"]); modes.add(v["projected"].get("defaultMode"))
    want = {"etl-pipe-kafka-ca", f"etl-pipe-kafka-{name}"}
    want |= {"sink-mysql": {"etl-pipe-mysql-sink"}, "sink-mongo": {"etl-pipe-mongo-sink"}}.get(name, set())
    if secrets != want:
        problems.append(f"{k8s_path} {name}: mounts Secrets {sorted(secrets)}, expected exactly {sorted(want)}")
    if modes != {0o400}:
        problems.append(f"{k8s_path} {name}: secret defaultMode {sorted(map(str, modes))}, expected 0400 (256)")

if problems:
    print("[validate] secrets:\n  " + "\n  ".join(problems), file=sys.stderr)
    sys.exit(1)
print("[validate] secrets: only file paths in the environment, no Secret object, one principal's password per stage"
      + ("" if merged_path else " (merged compose project not checked: no go)"))
PY

# ---------------------------------------------------------------- the environment against the real config loader
bin="${ETL_PIPE_BIN:-}"
for b in target/release/etl-pipe target/debug/etl-pipe; do [[ -z "$bin" && -x "$b" ]] && bin="$b"; done
if [[ -n "$bin" && -n "$merged" ]]; then
  "$VENV/bin/python" - "$bin" "$merged" deploy/k8s/etl-pipe.yaml "$tmp" <<'PY'
import json, os, pathlib, subprocess, sys, yaml
bin_, merged, k8s, tmp = sys.argv[1:5]
tmp = pathlib.Path(tmp)
STAGES = ["extract", "clean", "score", "sink-mysql", "sink-mongo"]
failed = []

def check(label, env, config, secret_dir, prefix):
    """`etl-pipe config check` with `env`, the secret paths under `prefix` moved to placeholders."""
    secret_dir.mkdir(parents=True, exist_ok=True)
    fixed = {}
    for k, v in env.items():
        v = str(v or "")
        if prefix in v:
            # Every path under the prefix gets a placeholder file.
            for part in v.replace('"', " ").replace("=", " ").replace("&", " ").split():
                if part.startswith(prefix):
                    (secret_dir / part[len(prefix):]).write_text("placeholder")
            v = v.replace(prefix, f"{secret_dir}/")
        fixed[k] = v
    base = {k: v for k, v in os.environ.items() if not k.startswith("ETL")}
    # `config check` resolves every secret of the file, also ones this stage never reads (the
    # demo's API token belongs to extract): a placeholder unless the service sets it.
    base["ETL_API_TOKEN"] = "placeholder"
    base["ETL_MYSQL_PASSWORD"] = "placeholder"
    r = subprocess.run([bin_, "config", "check"], env={**base, **fixed, "ETL_CONFIG": config},
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        errors = [l for l in r.stderr.splitlines() if l.startswith("error")] or r.stderr.strip().splitlines()[-1:]
        failed.append(f"{label}: {' / '.join(errors) or f'exit {r.returncode}'}")

services = json.load(open(merged))["services"]
for stage in STAGES + ["topics", "acls"]:
    check(f"secure compose {stage}", services[stage].get("environment") or {}, "config/demo.toml",
          tmp / "run-secrets" / stage, "/run/secrets/")

for d in yaml.safe_load_all(open(k8s)):
    if d and d.get("kind") == "ConfigMap":
        text = d["data"]["config.toml"]
        cfg = tmp / "k8s-config.toml"
        cfg.write_text(text.replace("/var/run/secrets/etl-pipe/", f"{tmp}/k8s-secrets/"))
        (tmp / "k8s-secrets").mkdir(exist_ok=True)
        for name in ("kafka-password", "kafka-ca.pem", "mysql-password", "mysql-ca.pem", "mongo-password", "mongo-ca.pem"):
            (tmp / "k8s-secrets" / name).write_text("placeholder")
for d in yaml.safe_load_all(open(k8s)):
    if d and d.get("kind") == "Deployment":
        c = d["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in c.get("env") or [] if "value" in e and e["name"] != "ETL_CONFIG"}
        check(f"k8s {d['metadata']['name']}", env, str(tmp / "k8s-config.toml"), tmp / "unused", "/nonexistent/")

if failed:
    print("[validate] etl-pipe config check failed:\n  " + "\n  ".join(failed), file=sys.stderr)
    sys.exit(1)
print(f"[validate] etl-pipe config check ({bin_}): every secure compose stage and k8s Deployment")
PY
else
  echo "[validate] no etl-pipe binary (ETL_PIPE_BIN, target/release, target/debug) or no merged project: config check of the deploy environments skipped"
fi
