//! A minimal client of the Confluent Schema Registry REST API: register a schema under a
//! subject (`POST /subjects/{subject}/versions`) and fetch a schema by id
//! (`GET /schemas/ids/{id}`). Caching lives in [`super::Codec`]. Credentials may be given as
//! `https://user:password@host` (reqwest sends them as basic auth); they never appear in an
//! error message or a log line.
use std::time::Duration;

use serde::Deserialize;

use super::CodecError;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Clone)]
pub(crate) struct Registry {
    client: reqwest::Client,
    /// The configured URL, with credentials if any, without a trailing slash.
    base: String,
    /// The same URL without credentials, for messages.
    display: String,
}

impl std::fmt::Debug for Registry {
    // Hand-written so that credentials in the URL never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("url", &self.display)
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
struct ErrorResponse {
    error_code: Option<i64>,
    message: Option<String>,
}

/// The outcome of `GET /schemas/ids/{id}` that is the record's fault, not the registry's.
pub(crate) enum Fetched {
    Schema(String),
    /// 404 or a non-Avro schema: no retry will make the record decodable.
    NotUsable(String),
}

impl Registry {
    pub(crate) fn new(url: &str) -> Result<Registry, CodecError> {
        let mut parsed = reqwest::Url::parse(url).map_err(|e| CodecError::Registry {
            operation: "configure".into(),
            status: None,
            message: format!("kafka.schema_registry_url is not a URL: {e}"),
            retriable: false,
        })?;
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| CodecError::Registry {
                operation: "configure".into(),
                status: None,
                message: e.without_url().to_string(),
                retriable: false,
            })?;
        Ok(Registry {
            client,
            base: url.trim_end_matches('/').to_string(),
            display: parsed.as_str().trim_end_matches('/').to_string(),
        })
    }

    /// Registers `schema` under `subject` (idempotent: an equal schema gets its existing id).
    pub(crate) async fn register(&self, subject: &str, schema: &str) -> Result<u32, CodecError> {
        let operation = format!("POST {}/subjects/{subject}/versions", self.display);
        let body = serde_json::json!({ "schema": schema });
        let resp = self
            .client
            .post(format!("{}/subjects/{subject}/versions", self.base))
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(reqwest::header::ACCEPT, CONTENT_TYPE)
            .json(&body)
            .send()
            .await
            .map_err(|e| transport(&operation, e))?;
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
        let operation = format!("GET {}/schemas/ids/{id}", self.display);
        let resp = self
            .client
            .get(format!("{}/schemas/ids/{id}", self.base))
            .header(reqwest::header::ACCEPT, CONTENT_TYPE)
            .send()
            .await
            .map_err(|e| transport(&operation, e))?;
        let status = resp.status();
        if status.as_u16() == 404 {
            let message = error_message(resp).await;
            return Ok(Fetched::NotUsable(format!(
                "the registry does not know it ({message})"
            )));
        }
        if !status.is_success() {
            let message = error_message(resp).await;
            // The record may be fine; the registry is down or refuses us: retry, never
            // dead-letter good data because of the registry.
            return Err(CodecError::Registry {
                operation,
                status: Some(status.as_u16()),
                message,
                retriable: true,
            });
        }
        let parsed: SchemaResponse = resp.json().await.map_err(|e| CodecError::Registry {
            operation: operation.clone(),
            status: Some(status.as_u16()),
            message: format!("unexpected response body: {}", e.without_url()),
            retriable: true,
        })?;
        match parsed.schema_type.as_deref() {
            None | Some("AVRO") => Ok(Fetched::Schema(parsed.schema)),
            Some(other) => Ok(Fetched::NotUsable(format!(
                "it is a {other} schema, not Avro"
            ))),
        }
    }
}

fn transport(operation: &str, e: reqwest::Error) -> CodecError {
    CodecError::Registry {
        operation: operation.to_string(),
        status: None,
        message: format!("unreachable: {}", e.without_url()),
        retriable: true,
    }
}

async fn error_message(resp: reqwest::Response) -> String {
    let status = resp.status();
    match resp.json::<ErrorResponse>().await {
        Ok(ErrorResponse {
            error_code,
            message: Some(m),
        }) => match error_code {
            Some(c) => format!("{status}, error {c}: {m}"),
            None => format!("{status}: {m}"),
        },
        _ => status.to_string(),
    }
}
