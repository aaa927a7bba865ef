//! A minimal client of the Confluent Schema Registry REST API: register a schema under a
//! subject (`POST /subjects/{subject}/versions`), fetch a schema by id
//! (`GET /schemas/ids/{id}`), read a subject's latest version and compatibility level, and
//! set the level (`PUT /config/{subject}`). Caching lives in [`super::Codec`]. Credentials
//! come from `kafka.schema_registry_user` / `kafka.schema_registry_password` and go out as
//! basic auth; they never appear in an error message or a log line (the config refuses them
//! in the URL, and any left there are stripped before the URL is shown).
use std::time::Duration;

use serde::Deserialize;

use super::CodecError;
use crate::settings::{KafkaConfig, Secret};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Clone)]
pub(crate) struct Registry {
    client: reqwest::Client,
    /// The configured URL without credentials (safe in messages) and trailing slash.
    base: String,
    /// Basic-auth user and password.
    auth: Option<(String, Secret)>,
}

impl std::fmt::Debug for Registry {
    // Hand-written so that credentials in the URL never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.base)
            .field("basic_auth_user", &self.auth.as_ref().map(|(u, _)| u))
            .finish()
    }
}

#[derive(Deserialize)]
struct IdResponse {
    id: u32,
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct LatestResponse {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct ConfigResponse {
    #[serde(rename = "compatibilityLevel", alias = "compatibility")]
    level: String,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error_code: Option<i64>,
    message: Option<String>,
}

/// The outcome of `GET /schemas/ids/{id}` that is the record's fault, not the registry's.
pub(crate) enum Fetched {
    Schema(String),
    /// 404: the registry does not know the id (now; a restored registry may later).
    NotFound(String),
    /// A non-Avro schema: no retry will make the record decodable.
    NotUsable(String),
}

/// `kafka.schema_registry_ca` read and parsed; the error names the key.
fn read_ca(path: &std::path::Path) -> Result<reqwest::Certificate, CodecError> {
    let fail = |m: String| CodecError::Registry {
        operation: "configure".into(),
        status: None,
        message: format!("config key `kafka.schema_registry_ca`: {m}"),
        retriable: false,
    };
    let pem =
        std::fs::read(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    reqwest::Certificate::from_pem(&pem)
        .map_err(|e| fail(format!("{} is not a PEM certificate: {e}", path.display())))
}

impl Registry {
    /// The registry of `kafka.schema_registry_url`, with the configured credentials (the
    /// password resolved now). `None` without a URL.
    pub(crate) fn from_config(kafka: &KafkaConfig) -> Result<Option<Registry>, CodecError> {
        let Some(url) = &kafka.schema_registry_url else {
            return Ok(None);
        };
        let auth = kafka
            .schema_registry_auth()
            .map_err(|e| CodecError::Registry {
                operation: "configure".into(),
                status: None,
                message: e.to_string(),
                retriable: false,
            })?;
        let ca = match &kafka.schema_registry_ca {
            Some(path) => Some(read_ca(path)?),
            None => None,
        };
        let mut r = Registry::build(url, ca)?;
        r.auth = auth;
        Ok(Some(r))
    }

    #[cfg(test)]
    pub(crate) fn new(url: &str) -> Result<Registry, CodecError> {
        Registry::build(url, None)
    }

    /// A client of `url` trusting `ca` besides the bundled roots.
    fn build(url: &str, ca: Option<reqwest::Certificate>) -> Result<Registry, CodecError> {
        let mut parsed = reqwest::Url::parse(url).map_err(|e| CodecError::Registry {
            operation: "configure".into(),
            status: None,
            message: format!("kafka.schema_registry_url is not a URL: {e}"),
            retriable: false,
        })?;
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15));
        if let Some(ca) = ca {
            builder = builder.add_root_certificate(ca);
        }
        let client = builder.build().map_err(|e| CodecError::Registry {
            operation: "configure".into(),
            status: None,
            message: e.without_url().to_string(),
            retriable: false,
        })?;
        Ok(Registry {
            client,
            // Credentials never go out from the URL (the config refuses them there).
            base: parsed.as_str().trim_end_matches('/').to_string(),
            auth: None,
        })
    }

    /// The URL (without credentials).
    pub(crate) fn display(&self) -> &str {
        &self.base
    }

    /// Sends `rb`, telling readiness whether the registry answered: unreachable, 5xx, 401/403
    /// and 429 count as failing (what a stage retries), any other answer as reachable.
    async fn send(
        &self,
        rb: reqwest::RequestBuilder,
        operation: &str,
    ) -> Result<reqwest::Response, CodecError> {
        let sent = rb.send().await;
        let ok = match &sent {
            Ok(r) => {
                let s = r.status();
                !(s.is_server_error() || matches!(s.as_u16(), 401 | 403 | 429))
            }
            Err(_) => false,
        };
        // The codec reports here rather than each stage: it is where registry calls happen,
        // at start-up and mid-stream (an id seen for the first time).
        crate::observability::health().set_registry_reachable(ok);
        sent.map_err(|e| transport(operation, e))
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::ACCEPT, CONTENT_TYPE);
        match &self.auth {
            Some((user, password)) => rb.basic_auth(user, Some(password.expose())),
            None => rb,
        }
    }

    /// Registers `schema` under `subject` (idempotent: an equal schema gets its existing id).
    pub(crate) async fn register(&self, subject: &str, schema: &str) -> Result<u32, CodecError> {
        let operation = format!("POST {}/subjects/{subject}/versions", self.base);
        let body = serde_json::json!({ "schema": schema });
        let resp = self
            .send(
                self.request(
                    reqwest::Method::POST,
                    &format!("/subjects/{subject}/versions"),
                )
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .json(&body),
                &operation,
            )
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let message = error_message(resp).await;
            // 409: incompatible with the subject's compatibility rule; 422: invalid schema.
            // Both need a person, not a retry. Anything else (5xx, 401/403, 429) may pass.
            let retriable = !matches!(status.as_u16(), 409 | 422);
            return Err(CodecError::Registry {
                operation,
                status: Some(status.as_u16()),
                message,
                retriable,
            });
        }
        let parsed: IdResponse = resp.json().await.map_err(|e| CodecError::Registry {
            operation: operation.clone(),
            status: Some(status.as_u16()),
            message: format!("unexpected response body: {}", e.without_url()),
            retriable: true,
        })?;
        Ok(parsed.id)
    }

    /// Fetches the schema text of `id`.
    pub(crate) async fn fetch(&self, id: u32) -> Result<Fetched, CodecError> {
        let operation = format!("GET {}/schemas/ids/{id}", self.base);
        let resp = self
            .send(
                self.request(reqwest::Method::GET, &format!("/schemas/ids/{id}")),
                &operation,
            )
            .await?;
        let status = resp.status();
        if status.as_u16() == 404 {
            let message = error_message(resp).await;
            return Ok(Fetched::NotFound(format!(
                "the registry does not know it ({message})"
            )));
        }
        // The record may be fine; the registry is down or refuses us: retry, never
        // dead-letter good data because of the registry.
        let parsed: SchemaResponse = json_body(resp, operation).await?;
        match parsed.schema_type.as_deref() {
            None | Some("AVRO") => Ok(Fetched::Schema(parsed.schema)),
            Some(other) => Ok(Fetched::NotUsable(format!(
                "it is a {other} schema, not Avro"
            ))),
        }
    }
}

impl Registry {
    /// The schema text of `subject`'s latest version; `None` when the subject has none (404).
    pub(crate) async fn latest(&self, subject: &str) -> Result<Option<String>, CodecError> {
        let operation = format!("GET {}/subjects/{subject}/versions/latest", self.base);
        let resp = self
            .send(
                self.request(
                    reqwest::Method::GET,
                    &format!("/subjects/{subject}/versions/latest"),
                ),
                &operation,
            )
            .await?;
        let status = resp.status();
        if status.as_u16() == 404 {
            return Ok(None);
        }
        let parsed: LatestResponse = json_body(resp, operation).await?;
        match parsed.schema_type.as_deref() {
            None | Some("AVRO") => Ok(Some(parsed.schema)),
            Some(_) => Ok(None),
        }
    }

    /// The compatibility level that applies to `subject`: its own, else the global one.
    pub(crate) async fn compatibility(&self, subject: &str) -> Result<String, CodecError> {
        for path in [format!("/config/{subject}"), "/config".to_string()] {
            let operation = format!("GET {}{path}", self.base);
            let resp = self
                .send(self.request(reqwest::Method::GET, &path), &operation)
                .await?;
            let status = resp.status();
            // 404: no level of the subject's own; the global one applies.
            if status.as_u16() == 404 {
                continue;
            }
            if !status.is_success() {
                let message = error_message(resp).await;
                return Err(CodecError::Registry {
                    operation,
                    status: Some(status.as_u16()),
                    message,
                    retriable: true,
                });
            }
            let parsed: ConfigResponse = resp.json().await.map_err(|e| CodecError::Registry {
                operation: operation.clone(),
                status: Some(status.as_u16()),
                message: format!("unexpected response body: {}", e.without_url()),
                retriable: true,
            })?;
            return Ok(parsed.level);
        }
        // Confluent's documented default.
        Ok("BACKWARD".into())
    }

    /// Sets `subject`'s compatibility level (the subject need not exist yet).
    pub(crate) async fn set_compatibility(
        &self,
        subject: &str,
        level: &str,
    ) -> Result<(), CodecError> {
        let operation = format!("PUT {}/config/{subject}", self.base);
        let resp = self
            .send(
                self.request(reqwest::Method::PUT, &format!("/config/{subject}"))
                    .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                    .json(&serde_json::json!({ "compatibility": level })),
                &operation,
            )
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let message = error_message(resp).await;
            return Err(CodecError::Registry {
                operation,
                status: Some(status.as_u16()),
                message,
                retriable: status.is_server_error() || status.as_u16() == 429,
            });
        }
        Ok(())
    }
}

fn transport(operation: &str, e: reqwest::Error) -> CodecError {
    // reqwest's own text ("error sending request") hides the cause: walk the chain.
    let e = e.without_url();
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    let message = if chain.contains("certificate") {
        format!(
            "{TLS_REFUSED}{chain} (the registry's certificate is not trusted: set \
             kafka.schema_registry_ca to the CA that signed it)"
        )
    } else {
        format!("unreachable: {chain}")
    };
    CodecError::Registry {
        operation: operation.to_string(),
        status: None,
        message,
        retriable: true,
    }
}

/// How a registry error whose TLS handshake failed on the certificate starts.
pub(crate) const TLS_REFUSED: &str = "TLS: ";

async fn error_message(resp: reqwest::Response) -> String {
    let status = resp.status();
    let text = match resp.json::<ErrorResponse>().await {
        Ok(ErrorResponse {
            error_code,
            message: Some(m),
        }) => match error_code {
            Some(c) => format!("{status}, error {c}: {m}"),
            None => format!("{status}: {m}"),
        },
        _ => status.to_string(),
    };
    match status.as_u16() {
        401 => format!(
            "{text} (the registry refused the credentials: check kafka.schema_registry_user \
             and kafka.schema_registry_password)"
        ),
        403 => format!("{text} (the registry's user may not do this: check its permissions)"),
        _ => text,
    }
}

/// A successful response's JSON body; any other status, or a body that does not parse, is a
/// retriable registry error (the registry is down or refuses us; the data may be fine).
async fn json_body<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    operation: String,
) -> Result<T, CodecError> {
    let status = resp.status();
    if !status.is_success() {
        let message = error_message(resp).await;
        return Err(CodecError::Registry {
            operation,
            status: Some(status.as_u16()),
            message,
            retriable: true,
        });
    }
    resp.json().await.map_err(|e| CodecError::Registry {
        operation,
        status: Some(status.as_u16()),
        message: format!("unexpected response body: {}", e.without_url()),
        retriable: true,
    })
}
