//! The `[extract]` config section: which API to pull from (URL template and its variables,
//! pagination, where the records and their key are), how to authenticate (a secret, never
//! logged), and how politely to ask (rate limit, timeout, retries, availability probe).
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::{ConfigError, SecretRef};

/// The extract stage's source.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractConfig {
    /// Name of the source: the `etl.source` header, the checkpoint keys and the transactional id
    /// (`<pipeline>.extract.<source>`). Change it and the extractor starts from scratch.
    #[serde(default = "default_source")]
    pub source: String,
    /// URL template. `{name}` is replaced by each value of `vars.name`; the cartesian product of
    /// all variables gives the request streams (e.g. queue × tier × division).
    #[serde(default = "default_url")]
    pub url: String,
    /// Values of the template variables, in request order.
    #[serde(default = "default_vars")]
    pub vars: BTreeMap<String, Vec<String>>,
    /// How a stream moves from page to page.
    #[serde(default)]
    pub pagination: PaginationConfig,
    /// Where the records are in a response: empty = the body is the array; otherwise a dotted
    /// field path to the array (e.g. `data.items`).
    #[serde(default)]
    pub records_path: String,
    /// Dotted path of the field whose value (a string or a number) is the record key.
    #[serde(default = "default_key_field")]
    pub key_field: String,
    /// Authentication.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Requests per second across all streams (0 = unlimited). Keep it under the API's limit;
    /// 429s are honoured anyway.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: f64,
    /// Timeout of one request, body included.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Streams fetched at the same time (pages within one stream are sequential).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Continuous mode: a pass starts this long after the previous one started.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Resume an interrupted pass from its checkpoints (`false`: every run starts a fresh pass).
    #[serde(default = "default_true")]
    pub resume: bool,
    /// A Kafka transaction (records + checkpoints) is committed after this many records...
    #[serde(default = "default_commit_records")]
    pub commit_records: usize,
    /// ...or this long after its first page, whichever comes first.
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Retry policy of page requests.
    #[serde(default)]
    pub retry: RetryConfig,
    /// The availability check before each pass.
    #[serde(default)]
    pub probe: ProbeConfig,
}

/// The league API's queues, tiers and divisions: the default `{queue}`/`{tier}`/`{division}`
/// values of [`ExtractConfig::vars`] (the sample API serves the same).
pub const DEFAULT_QUEUES: &[&str] = &["RANKED_SOLO_5x5"];
pub const DEFAULT_TIERS: &[&str] = &[
    "DIAMOND", "EMERALD", "PLATINUM", "GOLD", "SILVER", "BRONZE", "IRON",
];
pub const DEFAULT_DIVISIONS: &[&str] = &["I", "II", "III", "IV"];

fn default_source() -> String {
    "league-entries".into()
}
fn default_url() -> String {
    "http://127.0.0.1:8080/lol/league-exp/v4/entries/{queue}/{tier}/{division}".into()
}
fn default_vars() -> BTreeMap<String, Vec<String>> {
    let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    BTreeMap::from([
        ("queue".to_string(), v(DEFAULT_QUEUES)),
        ("tier".to_string(), v(DEFAULT_TIERS)),
        ("division".to_string(), v(DEFAULT_DIVISIONS)),
    ])
}
fn default_key_field() -> String {
    "summonerId".into()
}
fn default_rate_limit() -> f64 {
    // The original API's development key allows 20 requests per second.
    20.0
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_concurrency() -> usize {
    4
}
fn default_interval() -> Duration {
    Duration::from_secs(86_400)
}
fn default_true() -> bool {
    true
}
fn default_commit_records() -> usize {
    20_000
}
fn default_commit_interval() -> Duration {
    Duration::from_millis(250)
}

impl Default for ExtractConfig {
    fn default() -> Self {
        Self {
            source: default_source(),
            url: default_url(),
            vars: default_vars(),
            pagination: Default::default(),
            records_path: String::new(),
            key_field: default_key_field(),
            auth: Default::default(),
            rate_limit: default_rate_limit(),
            timeout: default_timeout(),
            concurrency: default_concurrency(),
            interval: default_interval(),
            resume: true,
            commit_records: default_commit_records(),
            commit_interval: default_commit_interval(),
            retry: Default::default(),
            probe: Default::default(),
        }
    }
}

/// `page`: a numbered query parameter, a stream ends at the first empty page.
/// `next_link`: each response names the next URL (a body field or the `Link` header).
/// `none`: one request per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaginationMode {
    Page,
    NextLink,
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaginationConfig {
    /// `page`, `next_link` or `none`.
    #[serde(default = "default_mode")]
    pub mode: PaginationMode,
    /// `page` mode: the query parameter carrying the page number.
    #[serde(default = "default_page_param")]
    pub param: String,
    /// `page` mode: the first page number.
    #[serde(default = "default_start")]
    pub start: u64,
    /// `next_link` mode: dotted path of the next URL in the body; unset = the `Link: <…>; rel="next"` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_field: Option<String>,
    /// Safety stop: at most this many pages per stream (0 = no limit).
    #[serde(default)]
    pub max_pages: u64,
}

fn default_mode() -> PaginationMode {
    PaginationMode::Page
}
fn default_page_param() -> String {
    "page".into()
}
fn default_start() -> u64 {
    1
}

impl Default for PaginationConfig {
    fn default() -> Self {
        Self {
            mode: default_mode(),
            param: default_page_param(),
            start: default_start(),
            next_field: None,
            max_pages: 0,
        }
    }
}

/// Where the credential goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// A request header (`name`), value `prefix` + token.
    Header,
    /// A query parameter (`name`); redacted from every logged or stored URL.
    Query,
    /// No credential.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `header`, `query` or `none`.
    #[serde(default = "default_auth_kind")]
    pub kind: AuthKind,
    /// Header or query parameter name.
    #[serde(default = "default_auth_name")]
    pub name: String,
    /// Put before the token in a header (e.g. `"Bearer "`).
    #[serde(default)]
    pub prefix: String,
    /// The token: `{ env = "VAR" }` or `{ file = "/path" }`.
    #[serde(default = "default_token")]
    pub token: SecretRef,
}

fn default_auth_kind() -> AuthKind {
    AuthKind::Header
}
fn default_auth_name() -> String {
    "X-Riot-Token".into()
}
fn default_token() -> SecretRef {
    SecretRef::from_env("ETL_API_TOKEN")
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            kind: default_auth_kind(),
            name: default_auth_name(),
            prefix: String::new(),
            token: default_token(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts of one request on 5xx, timeouts, connection errors and truncated or non-JSON
    /// bodies (1 = no retry). After the last one the stream stops and the run reports it.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// First backoff; doubles per attempt, with jitter (half fixed, half random).
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest backoff.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// 429 answers tolerated per request (each waits `Retry-After`) before giving up.
    #[serde(default = "default_max_rate_limited")]
    pub max_rate_limited: u32,
    /// Longest `Retry-After` honoured; a longer one fails the request instead of stalling the run.
    #[serde(default = "default_max_retry_after", with = "humantime_serde")]
    pub max_retry_after: Duration,
}

fn default_max_attempts() -> u32 {
    6
}
fn default_initial_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_max_rate_limited() -> u32 {
    30
}
fn default_max_retry_after() -> Duration {
    Duration::from_secs(300)
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            max_rate_limited: default_max_rate_limited(),
            max_retry_after: default_max_retry_after(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Probe before each pass (`false`: the pass's first request is the only check).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// URL probed before each pass (with the credential); unset = the first page of the first
    /// stream, whose answer the pass then uses instead of fetching it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Probe attempts while the API is down (connection errors, timeouts, 5xx), with backoff.
    #[serde(default = "default_probe_attempts")]
    pub attempts: u32,
}

fn default_probe_attempts() -> u32 {
    5
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            url: None,
            attempts: default_probe_attempts(),
        }
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::key(key, "must be an http:// or https:// URL"));
    }
    Ok(())
}

impl ExtractConfig {
    /// Rejects contradictions, naming the key. Does not read the secret (that happens at run).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_source()?;
        self.validate_pagination()?;
        self.validate_auth()?;
        self.validate_limits()
    }

    /// The source name, the URL template and its variables.
    fn validate_source(&self) -> Result<(), ConfigError> {
        if !is_name(&self.source) {
            return Err(ConfigError::key(
                "extract.source",
                "must be non-empty letters, digits, '.', '_' or '-'",
            ));
        }
        check_url("extract.url", &self.url)?;
        let used = super::source::template_vars(&self.url)
            .map_err(|m| ConfigError::key("extract.url", m))?;
        for v in &used {
            match self.vars.get(v) {
                None => {
                    return Err(ConfigError::key(
                        format!("extract.vars.{v}"),
                        format!("the URL template uses {{{v}}} but no values are given"),
                    ))
                }
                Some(values) if values.is_empty() => {
                    return Err(ConfigError::key(
                        format!("extract.vars.{v}"),
                        "needs at least one value",
                    ))
                }
                Some(_) => {}
            }
        }
        for k in self.vars.keys() {
            if !used.contains(k) {
                return Err(ConfigError::key(
                    format!("extract.vars.{k}"),
                    format!("is not used by extract.url (no {{{k}}} in the template)"),
                ));
            }
        }
        Ok(())
    }

    /// The pagination mode and the field paths of records, key and next link.
    fn validate_pagination(&self) -> Result<(), ConfigError> {
        match self.pagination.mode {
            PaginationMode::Page => {
                if self.pagination.param.is_empty() {
                    return Err(ConfigError::key(
                        "extract.pagination.param",
                        "must name the page query parameter",
                    ));
                }
                if self.pagination.next_field.is_some() {
                    return Err(ConfigError::key(
                        "extract.pagination.next_field",
                        "only applies to mode = \"next_link\"",
                    ));
                }
            }
            PaginationMode::NextLink | PaginationMode::None => {
                if self.pagination.mode == PaginationMode::None
                    && self.pagination.next_field.is_some()
                {
                    return Err(ConfigError::key(
                        "extract.pagination.next_field",
                        "only applies to mode = \"next_link\"",
                    ));
                }
                if let Some(f) = &self.pagination.next_field {
                    if f.split('.').any(str::is_empty) {
                        return Err(ConfigError::key(
                            "extract.pagination.next_field",
                            "must be a dotted field path like `links.next`",
                        ));
                    }
                }
            }
        }
        if !self.records_path.is_empty() && self.records_path.split('.').any(str::is_empty) {
            return Err(ConfigError::key(
                "extract.records_path",
                "must be empty (root array) or a dotted field path like `data.items`",
            ));
        }
        if self.key_field.is_empty() || self.key_field.split('.').any(str::is_empty) {
            return Err(ConfigError::key(
                "extract.key_field",
                "must be a field name or dotted path",
            ));
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        match self.auth.kind {
            AuthKind::None => {}
            AuthKind::Header | AuthKind::Query => {
                if self.auth.name.is_empty()
                    || !self
                        .auth
                        .name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(ConfigError::key(
                        "extract.auth.name",
                        "must be a header or query parameter name",
                    ));
                }
                self.auth.token.validate("extract.auth.token")?;
            }
        }
        Ok(())
    }

    /// Rate, timeout, concurrency, interval, transaction size, retries and probe.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        if !self.rate_limit.is_finite() || self.rate_limit < 0.0 {
            return Err(ConfigError::key(
                "extract.rate_limit",
                "must be a number of requests per second, 0 for unlimited",
            ));
        }
        if self.timeout < Duration::from_millis(10) {
            return Err(ConfigError::key("extract.timeout", "must be at least 10ms"));
        }
        if self.concurrency == 0 || self.concurrency > 256 {
            return Err(ConfigError::key(
                "extract.concurrency",
                "must be between 1 and 256",
            ));
        }
        if self.interval < Duration::from_secs(1) {
            return Err(ConfigError::key("extract.interval", "must be at least 1s"));
        }
        if self.commit_records == 0 {
            return Err(ConfigError::key(
                "extract.commit_records",
                "must be at least 1",
            ));
        }
        if self.retry.max_attempts == 0 {
            return Err(ConfigError::key(
                "extract.retry.max_attempts",
                "must be at least 1 (1 = no retry)",
            ));
        }
        if self.retry.initial_backoff > self.retry.max_backoff {
            return Err(ConfigError::key(
                "extract.retry.initial_backoff",
                "must not exceed extract.retry.max_backoff",
            ));
        }
        if self.probe.attempts == 0 {
            return Err(ConfigError::key(
                "extract.probe.attempts",
                "must be at least 1",
            ));
        }
        if let Some(u) = &self.probe.url {
            check_url("extract.probe.url", u)?;
        }
        Ok(())
    }

    /// Resolves the token when the source needs one (the error names the key, not the value).
    pub fn check_secrets(&self) -> Result<(), ConfigError> {
        match self.auth.kind {
            AuthKind::None => Ok(()),
            _ => self.auth.token.resolve("extract.auth.token").map(|_| ()),
        }
    }

    /// The credential's source, safe to print.
    pub fn secret_status(&self) -> Option<String> {
        match self.auth.kind {
            AuthKind::None => None,
            _ => Some(self.auth.token.describe("extract.auth.token")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ExtractConfig, ConfigError> {
        let c: ExtractConfig =
            toml::from_str(text).map_err(|e| ConfigError::key("x", e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn defaults_target_the_sample_api_and_validate() {
        let c = ExtractConfig::default();
        c.validate().unwrap();
        assert_eq!(c.key_field, "summonerId");
        assert_eq!(c.auth.name, "X-Riot-Token");
    }

    #[test]
    fn template_and_vars_must_agree() {
        let err = parse("url = \"http://h/{a}/{b}\"\n[vars]\na = [\"1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("extract.vars.b"), "{err}");
        let err = parse("url = \"http://h/{a}\"\n[vars]\na = [\"1\"]\nz = [\"2\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("extract.vars.z"), "{err}");
        let err = parse("url = \"http://h/{a\"\n[vars]\na = [\"1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("extract.url"), "{err}");
    }

    #[test]
    fn contradictions_name_the_key() {
        let err = parse("[pagination]\nmode = \"page\"\nnext_field = \"next\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("extract.pagination.next_field"), "{err}");
        let err = parse("[retry]\ninitial_backoff = \"1m\"\nmax_backoff = \"1s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("extract.retry.initial_backoff"), "{err}");
        let err = parse("[auth]\ntoken = { env = \"A\", file = \"/b\" }\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("extract.auth.token"), "{err}");
        let err = parse("rate_limit = -1.0\n").unwrap_err().to_string();
        assert!(err.contains("extract.rate_limit"), "{err}");
    }
}
