//! The binary's user-facing behaviour: config check and topics apply against the real broker.
mod common;

use std::process::Command;

fn etl_pipe() -> Command {
    Command::new(env!("CARGO_BIN_EXE_etl-pipe"))
}

#[test]
fn config_check_prints_effective_config_and_redacts_secrets() {
    let out = etl_pipe()
        .args(["config", "check", "--config", "config/demo.toml"])
        .env("ETL_MYSQL_PASSWORD", "very-secret-pw")
        .env("ETL_API_TOKEN", "api-token-value")
        .env("ETL__TOPICS__PARTITIONS", "5")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("partitions = 5"), "{stdout}");
    assert!(
        stdout.contains("mysql.password: set (from env ETL_MYSQL_PASSWORD)"),
        "{stdout}"
    );
    assert!(!stdout.contains("very-secret-pw") && !stderr.contains("very-secret-pw"));
}

#[test]
fn config_check_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.toml");
    std::fs::write(&f, "[kafka]\nbrokers = \"x:1\"\nlinger = 5\n").unwrap();
    let out = etl_pipe()
        .args(["config", "check", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kafka") && stderr.contains("linger"),
        "{stderr}"
    );

    std::fs::write(&f, "[topics]\nreplication_factor = 0\n").unwrap();
    let out = etl_pipe()
        .args(["config", "check", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("topics.replication_factor"), "{stderr}");
}

#[test]
fn topics_apply_creates_then_reports_differences_without_changing() {
    common::require_kafka();
    let p = common::unique("cli_topics");
    let envs: Vec<(String, String)> = [
        "raw",
        "cleaned",
        "scored",
        "dead_letter",
        "quarantine",
        "quality",
        "logs",
        "extract_state",
        "score_baseline",
    ]
    .iter()
    .map(|r| {
        (
            format!("ETL__TOPICS__{}__NAME", r.to_uppercase()),
            format!("{p}.{r}"),
        )
    })
    .collect();
    let run = |extra: &[(&str, &str)]| {
        let mut c = etl_pipe();
        c.args(["topics", "apply"])
            .envs(envs.iter().map(|(a, b)| (a, b)));
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let first = run(&[]);
    let s = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{s}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(s.matches("created").count(), 9, "{s}");

    let second = run(&[]);
    let s = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{s}");
    assert_eq!(s.matches("ok ").count(), 9, "{s}");

    let third = run(&[("ETL__TOPICS__RAW__PARTITIONS", "6")]);
    let s = String::from_utf8_lossy(&third.stdout);
    assert_eq!(third.status.code(), Some(3), "{s}");
    assert!(s.contains("partitions: have 3, want 6"), "{s}");
}
