"""Writes the configuration reference into README.md (between the CONFIG-REFERENCE markers)
from the config structs' doc comments, the defaults (an empty config's effective values) and
the demo config's values where they differ.
tests/readme.rs fails when a key is missing from the README, so run this after adding one:
    ETL_MYSQL_PASSWORD=x ETL_API_TOKEN=y python3 scripts/config_reference.py
"""
import re, subprocess, tempfile, tomllib

SECTIONS = [  # (key prefix, file, struct)
    ("pipeline", "src/settings/kafka.rs", "PipelineConfig"),
    ("kafka", "src/settings/kafka.rs", "KafkaConfig"),
    ("topics", "src/settings/topics.rs", "TopicsConfig"),
    ("topics.<role>", "src/settings/topics.rs", "TopicOverride"),
    ("mysql", "src/stages/sinks/mysql/config.rs", "MysqlConfig"),
    ("mongo", "src/stages/sinks/mongo/config.rs", "MongoConfig"),
    ("extract", "src/stages/extract/config.rs", "ExtractConfig"),
    ("extract.pagination", "src/stages/extract/config.rs", "PaginationConfig"),
    ("extract.auth", "src/stages/extract/config.rs", "AuthConfig"),
    ("extract.retry", "src/stages/extract/config.rs", "RetryConfig"),
    ("extract.probe", "src/stages/extract/config.rs", "ProbeConfig"),
    ("clean", "src/stages/clean/config.rs", "CleanConfig"),
    ("clean.fields.<field>", "src/stages/clean/config.rs", "FieldMapping"),
    ("score", "src/stages/score/config.rs", "ScoreConfig"),
    ("quality", "src/quality/decision.rs", "QualityConfig"),
    ("quality.fields.<field>", "src/quality/decision.rs", "FieldThresholds"),
    ("sink", "src/stages/sinks/config.rs", "SinkConfig"),
    ("sink.mysql", "src/stages/sinks/config.rs", "SinkMysqlConfig"),
    ("sink.mongo", "src/stages/sinks/config.rs", "SinkMongoConfig"),
    ("observability", "src/observability/mod.rs", "ObservabilityConfig"),
]

def fields(path, struct):
    src = open(path).read()
    m = re.search(r"pub struct " + struct + r"\s*\{(.*?)\n\}", src, re.S)
    out, doc = [], []
    for line in m.group(1).splitlines():
        s = line.strip()
        if s.startswith("///"):
            doc.append(s[3:].strip())
        elif s.startswith("#["):
            continue
        else:
            f = re.match(r"pub (r#)?(\w+)\s*:", s)
            if f:
                out.append((f.group(2), " ".join(doc)))
            doc = []
    return out

def effective(path):
    return tomllib.loads(subprocess.run(
        ["./target/debug/etl-pipe", "config", "check", "--config", path],
        capture_output=True, text=True, check=True).stdout)

eff = effective("config/demo.toml")
with tempfile.NamedTemporaryFile("w", suffix=".toml") as empty:
    # Nothing set but the optional stage sections: the code's defaults.
    empty.write("[extract]\n[clean]\n[score]\n")
    empty.flush()
    defaults = effective(empty.name)

def value(key, eff):
    v = eff
    for part in key.split("."):
        if not isinstance(v, dict) or part not in v:
            return ""
        v = v[part]
    if isinstance(v, dict):
        return ""
    s = repr(v) if not isinstance(v, str) else f'"{v}"'
    s = s.replace("True", "true").replace("False", "false").replace("|", "\\|")
    return s if len(s) < 60 else s[:57] + "…"

lines = ["| key | default | config/demo.toml | meaning |", "|---|---|---|---|"]
for prefix, path, struct in SECTIONS:
    for name, doc in fields(path, struct):
        key = f"{prefix}.{name}"
        sub = key if "<" not in key else ""
        doc = doc.replace("|", "\\|")
        d, v = (value(sub, defaults), value(sub, eff)) if sub else ("", "")
        # The demo column only where the demo config differs from the default.
        lines.append(f"| `{key}` | {d} | {v if v != d else ''} | {doc} |")
table = "\n".join(lines)
readme = open("README.md").read()
start, end = "<!-- CONFIG-REFERENCE:START -->", "<!-- CONFIG-REFERENCE:END -->"
i, j = readme.index(start) + len(start), readme.index(end)
open("README.md", "w").write(readme[:i] + "\n" + table + "\n" + readme[j:])
print(f"{len(lines) - 2} keys")
