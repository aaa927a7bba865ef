//! The README's configuration reference stays in sync with the config structs: every key of
//! the demo's effective config is listed.
use std::process::Command;

fn keys(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) if !t.is_empty() => {
            for (k, x) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                // Per-field maps are documented by their pattern (`clean.fields.<field>.from`).
                if p == "clean.fields"
                    || p == "quality.fields"
                    || p == "extract.vars"
                    || p == "kafka.client_options"
                {
                    out.push(p);
                    continue;
                }
                keys(&p, x, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn readme_lists_every_config_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_etl-pipe"))
        .args(["config", "check", "--config", "config/demo.toml"])
        .env("ETL_MYSQL_PASSWORD", "x")
        .env("ETL_API_TOKEN", "y")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eff: toml::Value = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let mut all = Vec::new();
    keys("", &eff, &mut all);
    let readme = std::fs::read_to_string("README.md").unwrap();
    let missing: Vec<String> = all
        .iter()
        .map(|k| {
            // A secret reference (`mysql.password.env`) is documented as the secret's key.
            let k = k.trim_end_matches(".env").trim_end_matches(".file");
            // Per-topic overrides are documented once, as `topics.<role>.name` and so on.
            let parts: Vec<&str> = k.split('.').collect();
            if parts.len() == 3 && parts[0] == "topics" {
                format!("topics.<role>.{}", parts[2])
            } else {
                k.to_string()
            }
        })
        .filter(|k| !readme.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's configuration reference misses {missing:?}: run scripts/config_reference.py"
    );
}
