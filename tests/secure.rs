//! The pipeline against the secure profile of the local stack
//! (`ETL_STACK_PROFILE=secure deploy/local/stack.sh up`, started by the test command): Kafka
//! on SASL_SSL with SCRAM-SHA-512 and ACLs, MariaDB requiring TLS, FerretDB over TLS only, all
//! certificates from the profile's throw-away CA. Every stage runs as its own Kafka principal
//! with exactly the ACLs `etl-pipe acls` prints, the MySQL sink as a TLS-only user with the
//! grants it prints. Wrong credentials, none, or a CA the client does not trust stop at start
//! with an error that says what to fix.
mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use etl_pipe::config::{Config, TopicRole};
use etl_pipe::ops::acls;
use etl_pipe::tooling::local::run;
use etl_pipe::tooling::local::tally;
use etl_pipe::tooling::local::{LocalPipeline, SourceOptions};

const HINT: &str =
    "start it with `ETL_STACK_PROFILE=secure deploy/local/stack.sh up` (the test command does)";
const EXE: &str = env!("CARGO_BIN_EXE_etl-pipe");

fn secure_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ETL_SECURE_DIR") {
        return d.into();
    }
    let home = std::env::var_os("ETL_STACK_HOME").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap()).join(".local/share/etl-pipe-stack"),
        PathBuf::from,
    );
    home.join("data/secure")
}
fn ca() -> PathBuf {
    secure_dir().join("tls/ca.pem")
}
fn password(user: &str) -> PathBuf {
    secure_dir()
        .join("secrets")
        .join(format!("{user}.password"))
}
fn kafka() -> String {
    std::env::var("ETL_TEST_SECURE_KAFKA").unwrap_or_else(|_| "127.0.0.1:9192".into())
}

fn require_secure() {
    assert!(
        ca().exists() && password("admin").exists(),
        "the secure profile's CA ({}) or passwords are missing; {HINT}",
        ca().display()
    );
}

fn kv(k: &str, v: impl AsRef<std::ffi::OsStr>) -> (String, String) {
    (k.to_string(), v.as_ref().to_string_lossy().into_owned())
}

/// Kafka over SASL_SSL as `user`, trusting the profile's CA; the password from its file.
fn kafka_env(user: &str) -> Vec<(String, String)> {
    vec![
        kv("ETL__KAFKA__BROKERS", kafka()),
        kv("ETL__KAFKA__CLIENT_OPTIONS__security.protocol", "SASL_SSL"),
        kv(
            "ETL__KAFKA__CLIENT_OPTIONS__sasl.mechanism",
            "SCRAM-SHA-512",
        ),
        kv("ETL__KAFKA__CLIENT_OPTIONS__sasl.username", user),
        kv(
            "ETL__KAFKA__CLIENT_OPTIONS__sasl.password__FILE",
            password(user),
        ),
        kv("ETL__KAFKA__CLIENT_OPTIONS__ssl.ca.location", ca()),
    ]
}

/// MariaDB over TLS as `user`, the certificate checked against the CA and 127.0.0.1.
fn mysql_env(user: &str, database: &str) -> Vec<(String, String)> {
    vec![
        kv("ETL__MYSQL__PORT", "3307"),
        kv("ETL__MYSQL__USER", user),
        // A whole table: the config file's `{ env = … }` is replaced, not merged.
        kv(
            "ETL__MYSQL__PASSWORD",
            format!("{{ file = \"{}\" }}", password(user).display()),
        ),
        kv("ETL__MYSQL__SSL_MODE", "verify_identity"),
        kv("ETL__MYSQL__SSL_CA", ca()),
        kv("ETL__MYSQL__DATABASE", database),
    ]
}

/// The schema registry behind the profile's HTTPS proxy: the CA and HTTP basic auth.
fn registry_url() -> String {
    std::env::var("ETL_TEST_SECURE_REGISTRY")
        .unwrap_or_else(|_| "https://127.0.0.1:8444/apis/ccompat/v7".into())
}
fn registry_env() -> Vec<(String, String)> {
    vec![
        kv("ETL__KAFKA__SCHEMA_REGISTRY_URL", registry_url()),
        kv("ETL__KAFKA__SCHEMA_REGISTRY_CA", ca()),
        kv("ETL__KAFKA__SCHEMA_REGISTRY_USER", "etl-registry"),
        kv(
            "ETL__KAFKA__SCHEMA_REGISTRY_PASSWORD",
            format!("{{ file = \"{}\" }}", password("etl-registry").display()),
        ),
    ]
}

fn mongo_env() -> Vec<(String, String)> {
    vec![kv(
        "ETL__MONGO__URI",
        format!(
            "mongodb://127.0.0.1:27018/?tls=true&tlsCAFile={}",
            ca().display()
        ),
    )]
}

/// A run prepared against the secure profile: the harness itself (topics, tallies) as the
/// administrators `admin` / `etl_admin`; topics created, every stage's ACLs created.
async fn prepare(test: &str, source: SourceOptions, dir: &Path) -> (LocalPipeline, String) {
    require_secure();
    let run_id = common::unique(test).replace('_', "-");
    let database = run_id.replace('-', "_");
    let mut env = kafka_env("admin");
    env.extend(mysql_env("etl_admin", &database));
    env.extend(mongo_env());
    env.extend(registry_env());
    let mut p = LocalPipeline::prepare(
        Path::new(EXE),
        Path::new("config/demo.toml"),
        dir,
        &run_id,
        source,
        &env,
    )
    .unwrap();
    for stage in acls::STAGES {
        let user = format!("etl-{stage}");
        let mut own = kafka_env(&user);
        own.retain(|(k, _)| k.contains("sasl.username") || k.contains("sasl.password"));
        if stage == "sink-mysql" {
            own.extend(mysql_env("etl_sink", &database));
        }
        p.stage_env.insert(stage.to_string(), own);
    }
    p.apply_topics().await.unwrap();
    let list = acls::kafka_acls(&p.cfg, &acls::principals(&[]).unwrap());
    acls::execute(&p.cfg, &list).unwrap();
    (p, database)
}

/// The database, and exactly the sink's printed grants for the TLS-only user `etl_sink`.
async fn mysql_database(cfg: &Config, database: &str) {
    let mut admin_cfg = cfg.mysql.clone();
    admin_cfg.database = "mysql".into();
    let admin = etl_pipe::stages::sinks::mysql::connect(&admin_cfg, 1)
        .await
        .unwrap_or_else(|e| panic!("secure MariaDB unreachable ({e}); {HINT}"));
    sqlx::query(&format!(
        "CREATE DATABASE `{database}` CHARACTER SET utf8mb4"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let table = tally::mysql_table(cfg).unwrap();
    let grants = acls::mysql_grants(cfg, &table, "'etl_sink'@'127.0.0.1'");
    for g in grants.lines().filter(|l| l.starts_with("GRANT ")) {
        sqlx::query(g).execute(&admin).await.unwrap();
    }
}

async fn drop_database(cfg: &Config, database: &str) {
    let mut admin_cfg = cfg.mysql.clone();
    admin_cfg.database = "mysql".into();
    if let Ok(admin) = etl_pipe::stages::sinks::mysql::connect(&admin_cfg, 1).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS `{database}`"))
            .execute(&admin)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_end_to_end_over_tls_and_scram_with_a_principal_per_stage() {
    let records = 3_000;
    let source = SourceOptions::with_faults(records);
    let dir = tempfile::tempdir().unwrap();
    let (mut p, database) = prepare("secure_e2e", source.clone(), dir.path()).await;
    mysql_database(&p.cfg, &database).await;
    let o = match run::run(&mut p, &[], Duration::from_secs(300), false).await {
        Ok(o) => o,
        Err(e) => panic!("run failed: {e}\n(logs kept in {})", dir.keep().display()),
    };
    eprintln!("{}", run::render(&p, &o));

    common::assert_exact_counts(&o, &source);
    assert!(
        o.ready.values().all(|ok| *ok) && o.ready.len() == 4,
        "readiness per stage: {:?}",
        o.ready
    );
    // Cleaned and scored went through the HTTPS registry with basic auth: Confluent-framed.
    for role in [TopicRole::Cleaned, TopicRole::Scored] {
        let got = common::read_committed(&p.cfg, &p.cfg.topics.name(role));
        assert!(!got.is_empty(), "{role:?} is empty");
        let unframed = got
            .iter()
            .filter(|m| m.payload.len() < 5 || m.payload[0] != 0)
            .count();
        assert_eq!(
            unframed, 0,
            "{role:?}: records without the Confluent framing"
        );
    }
    // Each stage really ran as its own principal: the logs name it at start-up.
    for stage in ["clean", "score", "sink-mysql", "sink-mongo"] {
        let log = std::fs::read_to_string(p.log_path(&format!("{stage}-0"))).unwrap();
        assert!(!log.contains("not authorized"), "{stage}: {log}");
    }
    // No password reached a log line, a config dump or a topic-bound log event.
    let secrets: Vec<String> = acls::STAGES
        .iter()
        .map(|s| format!("etl-{s}"))
        .chain(["admin", "etl_admin", "etl_sink", "etl-registry"].map(String::from))
        .map(|u| {
            std::fs::read_to_string(password(&u))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    for entry in std::fs::read_dir(&p.dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "a password is in {}",
                path.display()
            );
        }
    }
    drop_database(&p.cfg, &database).await;
}

/// Runs `etl-pipe <args>` with the run's environment plus `extra` (an empty value removes the
/// variable); its exit status and output, or a panic when it is still running after `secs`.
async fn run_cli(
    p: &LocalPipeline,
    extra: &[(String, String)],
    args: &[&str],
    secs: u64,
) -> (bool, String) {
    let (status, text) = run_cli_status(p, extra, args, secs).await;
    (status.success(), text)
}

/// [`run_cli`] with the exit status itself (a crash is not an exit 1).
async fn run_cli_status(
    p: &LocalPipeline,
    extra: &[(String, String)],
    args: &[&str],
    secs: u64,
) -> (std::process::ExitStatus, String) {
    let child = tokio::process::Command::new(EXE)
        .args(args)
        .envs(
            p.env
                .iter()
                .filter(|(k, _)| !extra.iter().any(|(e, v)| e == k && v.is_empty()))
                .cloned(),
        )
        .envs(extra.iter().filter(|(_, v)| !v.is_empty()).cloned())
        .env("ETL_CONFIG", "config/demo.toml")
        .env("ETL_MYSQL_PASSWORD", "unused")
        .env("ETL_API_TOKEN", "unused")
        .env("ETL__OBSERVABILITY__HTTP_PORT", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(secs), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`etl-pipe {}` still running after {secs}s", args.join(" ")))
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status, text)
}

/// The error lines (`error: …`), not the JSON log lines.
fn error_lines(out: &str) -> String {
    out.lines()
        .filter(|l| l.starts_with("error") || l.trim_start().starts_with("caused by"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_with_another_stages_credentials_stops_at_start_naming_topic_and_operation() {
    let dir = tempfile::tempdir().unwrap();
    let (p, database) = prepare("secure_wrong", SourceOptions::with_faults(10), dir.path()).await;
    mysql_database(&p.cfg, &database).await;
    let raw = p.cfg.topics.name(TopicRole::Raw);
    let scored = p.cfg.topics.name(TopicRole::Scored);
    // clean as sink-mongo: may read scored, not raw.
    let mut as_mongo = kafka_env("etl-sink-mongo");
    as_mongo.retain(|(k, _)| k.contains("sasl."));
    let started = std::time::Instant::now();
    let (ok, out) = run_cli(&p, &as_mongo, &["clean"], 60).await;
    let err = error_lines(&out);
    assert!(!ok, "clean ran with sink-mongo's credentials:\n{out}");
    assert!(
        err.contains(&format!("not authorized to READ topic {raw}"))
            && err.contains("User:etl-sink-mongo"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "no retry loop");
    // sink-mysql as score: may write scored, not read it.
    let mut as_score = kafka_env("etl-score");
    as_score.retain(|(k, _)| k.contains("sasl."));
    let (ok, out) = run_cli(&p, &as_score, &["sink-mysql"], 60).await;
    let err = error_lines(&out);
    assert!(!ok, "{out}");
    assert!(
        err.contains(&format!("not authorized to READ topic {scored}")),
        "{err}"
    );
    drop_database(&p.cfg, &database).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_credentials_or_not_trusting_the_ca_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = prepare("secure_refused", SourceOptions::with_faults(10), dir.path()).await;
    // TLS but no SASL: the broker hangs up after the handshake.
    let no_credentials = vec![kv("ETL__KAFKA__CLIENT_OPTIONS__security.protocol", "SSL")];
    let (ok, out) = run_cli(&p, &no_credentials, &["topics", "apply"], 90).await;
    let err = error_lines(&out);
    assert!(!ok, "{out}");
    assert!(
        err.contains("refused the connection") && err.contains("expects SASL authentication"),
        "{out}"
    );
    // The right credentials, but trusting the public CAs only, not the profile's.
    let no_ca = vec![kv(
        "ETL__KAFKA__CLIENT_OPTIONS__ssl.ca.location",
        "/etc/ssl/certs/ca-certificates.crt",
    )];
    let (ok, out) = run_cli(&p, &no_ca, &["clean"], 90).await;
    let err = error_lines(&out);
    assert!(!ok, "{out}");
    assert!(err.contains("ssl.ca.location"), "{err}");
    // A wrong password.
    let wrong = vec![kv(
        "ETL__KAFKA__CLIENT_OPTIONS__sasl.password__FILE",
        password("etl-clean"),
    )];
    let (ok, out) = run_cli(&p, &wrong, &["topics", "apply"], 90).await;
    let err = error_lines(&out);
    assert!(!ok, "{out}");
    assert!(err.contains("wrong SASL user or password"), "{err}");

    // MySQL: a CA that did not sign the server's certificate stops the sink at once (no retry
    // loop); without TLS the server refuses the REQUIRE SSL user.
    let mut sink = mysql_env("etl_sink", "mysql");
    sink.push(kv(
        "ETL__MYSQL__SSL_CA",
        "/etc/ssl/certs/ca-certificates.crt",
    ));
    let (ok, out) = run_cli(&p, &sink, &["sink-mysql"], 60).await;
    let err = error_lines(&out);
    assert!(!ok, "{out}");
    assert!(
        err.contains("TLS") && err.contains("not trusted") && err.contains("mysql.ssl_ca"),
        "{err}"
    );
    let mut plain = mysql_env("etl_sink", "mysql");
    plain.retain(|(k, _)| !k.contains("SSL"));
    plain.push(kv("ETL__MYSQL__SSL_MODE", "disabled"));
    // The run's environment names the CA; without TLS it goes.
    plain.push(kv("ETL__MYSQL__SSL_CA", ""));
    let (ok, out) = run_cli(&p, &plain, &["sink-mysql"], 60).await;
    assert!(!ok, "{out}");
    assert!(error_lines(&out).contains("Access denied"), "{out}");
}

/// The registry behind the profile's HTTPS proxy: a wrong password or a CA that does not sign
/// its certificate stops a stage at start with the reason, instead of a retry for ever; and the
/// stage exits with 1, not a crash (OpenSSL's exit handler freed its tables while a librdkafka
/// thread was still in its SCRAM handshake: SIGSEGV in HMAC, now and then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_refusing_the_password_or_the_ca_stops_the_stage_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = prepare(
        "secure_registry",
        SourceOptions::with_faults(10),
        dir.path(),
    )
    .await;
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password").unwrap();
    let wrong_password = vec![kv(
        "ETL__KAFKA__SCHEMA_REGISTRY_PASSWORD",
        format!("{{ file = \"{}\" }}", wrong.display()),
    )];
    for attempt in 0..8 {
        let (status, out) = run_cli_status(&p, &wrong_password, &["clean"], 60).await;
        assert_eq!(status.code(), Some(1), "attempt {attempt}: {status}\n{out}");
        let err = error_lines(&out);
        assert!(
            err.contains("401 Unauthorized (the registry refused the credentials: check kafka.schema_registry_user and kafka.schema_registry_password)"),
            "{err}"
        );
        assert!(!out.contains("not-the-password"), "{out}");
    }
    let no_ca = vec![kv("ETL__KAFKA__SCHEMA_REGISTRY_CA", "")];
    let (status, out) = run_cli_status(&p, &no_ca, &["score"], 60).await;
    assert_eq!(status.code(), Some(1), "{status}\n{out}");
    let err = error_lines(&out);
    assert!(
        err.contains("the registry's certificate is not trusted: set kafka.schema_registry_ca"),
        "{err}"
    );
}
