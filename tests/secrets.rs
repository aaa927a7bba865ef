//! Secrets are never printed: not in a config error, not by `config check`, not in the config
//! file the demo writes; `config check` resolves every reference; options etl-pipe sets for its
//! guarantees are refused instead of silently overridden. Run through the binary, as a user
//! would meet them.
use std::process::{Command, Output};

fn etl_pipe() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_etl-pipe"));
    // A clean environment for the config: no ETL__ overrides from the caller.
    for (k, _) in std::env::vars() {
        if k.starts_with("ETL") {
            c.env_remove(k);
        }
    }
    c
}

fn check(toml: &str, env: &[(&str, &str)]) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, toml).unwrap();
    let mut c = etl_pipe();
    c.args(["config", "check", "--config"]).arg(&f);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

/// Every secret the demo config needs, set; each test then breaks one thing.
const OK_ENV: &[(&str, &str)] = &[("ETL_MYSQL_PASSWORD", "pw-1"), ("ETL_API_TOKEN", "tok-1")];

#[test]
fn an_inline_secret_is_refused_without_being_echoed() {
    // In the file.
    let (out, text) = check(
        "[mysql]\npassword = \"hunter2-inline-value\"\n",
        &[("ETL_API_TOKEN", "x")],
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("mysql.password"), "{text}");
    assert!(!text.contains("hunter2-inline-value"), "{text}");

    // As an environment override.
    let mut env = OK_ENV.to_vec();
    env.push(("ETL__EXTRACT__AUTH__TOKEN", "abc-secret-token-123"));
    let (out, text) = check("", &env);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("extract.auth.token"), "{text}");
    assert!(!text.contains("abc-secret-token-123"), "{text}");

    // A number is a secret too.
    let (out, text) = check("[mysql]\npassword = 987654321\n", OK_ENV);
    assert!(!out.status.success(), "{text}");
    assert!(!text.contains("987654321"), "{text}");
}

#[test]
fn kafka_credentials_come_from_env_or_file_and_are_never_printed() {
    let toml = "[kafka.client_options]\n\"security.protocol\" = \"SASL_SSL\"\n\
                \"sasl.password\" = { env = \"ETL_TEST_KAFKA_PW\" }\n";
    let mut env = OK_ENV.to_vec();
    env.push(("ETL_TEST_KAFKA_PW", "kafka-pw-value-42"));
    let (out, text) = check(toml, &env);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ETL_TEST_KAFKA_PW"), "{text}");
    assert!(
        text.contains("kafka.client_options.sasl.password: set"),
        "{text}"
    );
    assert!(!text.contains("kafka-pw-value-42"), "{text}");

    // Inline, it is refused (naming the key, not repeating the value).
    let toml = "[kafka.client_options]\n\"sasl.password\" = \"kafka-inline-pw\"\n";
    let (out, text) = check(toml, OK_ENV);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("kafka.client_options.sasl.password"),
        "{text}"
    );
    assert!(!text.contains("kafka-inline-pw"), "{text}");
}

#[test]
fn config_check_fails_naming_a_secret_whose_variable_is_unset() {
    // demo.toml takes the API token from ETL_API_TOKEN: unset here.
    let mut c = etl_pipe();
    c.args(["config", "check", "--config", "config/demo.toml"])
        .env("ETL_MYSQL_PASSWORD", "pw-1");
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "config check passed with the token unset"
    );
    assert!(
        stderr.contains("extract.auth.token") && stderr.contains("ETL_API_TOKEN"),
        "{stderr}"
    );
    assert!(!stderr.contains("config OK"), "{stderr}");
}

#[test]
fn options_etl_pipe_sets_itself_are_refused_not_silently_overridden() {
    for key in [
        "isolation.level",
        "enable.idempotence",
        "transaction.timeout.ms",
    ] {
        let toml = format!("[kafka.client_options]\n\"{key}\" = \"x\"\n");
        let (out, text) = check(&toml, OK_ENV);
        assert!(!out.status.success(), "{key}: {text}");
        assert!(
            text.contains(&format!("kafka.client_options.{key}")),
            "{key}: {text}"
        );
    }
    // A tuning option is honoured, not refused.
    let (out, text) = check(
        "[kafka.client_options]\n\"linger.ms\" = 20\n\"fetch.wait.max.ms\" = 10\n",
        OK_ENV,
    );
    assert!(out.status.success(), "{text}");
}
