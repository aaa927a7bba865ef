//! Secret references (`{ env = … }` / `{ file = … }`) and resolved secrets that never print.
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Where a secret comes from: an environment variable or a file. Never the config file itself:
/// an inline value (`token = "abc"`, `ETL__EXTRACT__AUTH__TOKEN=abc`) is refused with a message
/// that does not repeat it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SecretRef {
    /// Name of the environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Path of a file holding the secret (trailing newline trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// What an inline secret is told: where secrets go instead. Never the value.
pub const INLINE_SECRET: &str =
    "a secret is never written inline (the value is not repeated here): \
give `{ env = \"VAR\" }` or `{ file = \"/path\" }`, or as an environment override \
ETL__…__ENV=VAR / ETL__…__FILE=/path";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default)]
            env: Option<String>,
            #[serde(default)]
            file: Option<PathBuf>,
        }
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`{ env = \"VAR\" }` or `{ file = \"/path\" }`")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, m: A) -> Result<SecretRef, A::Error> {
                let f = Fields::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(SecretRef {
                    env: f.env,
                    file: f.file,
                })
            }
            // Scalars are inline secrets: refuse them without echoing them.
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<SecretRef, E> {
                Err(E::custom(INLINE_SECRET))
            }
        }
        d.deserialize_any(V)
    }
}

impl SecretRef {
    pub fn from_env(var: &str) -> Self {
        Self {
            env: Some(var.into()),
            file: None,
        }
    }

    /// Checks the reference itself (exactly one source).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        match (&self.env, &self.file) {
            (Some(_), Some(_)) => Err(ConfigError::key(
                key,
                "give either `env` or `file`, not both",
            )),
            (None, None) => Err(ConfigError::key(
                key,
                "needs `env = \"VAR\"` or `file = \"/path\"`",
            )),
            _ => Ok(()),
        }
    }

    /// Reads the secret. The error names the key and the source, never a value.
    pub fn resolve(&self, key: &str) -> Result<Secret, ConfigError> {
        self.validate(key)?;
        if let Some(var) = &self.env {
            return std::env::var(var).map(Secret).map_err(|_| {
                ConfigError::key(key, format!("environment variable {var} is not set"))
            });
        }
        if let Some(path) = &self.file {
            return std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|e| {
                    ConfigError::key(
                        key,
                        format!("cannot read secret file {}: {e}", path.display()),
                    )
                });
        }
        Err(ConfigError::key(key, "no source"))
    }

    /// A description safe to print: where the secret comes from, and whether it is available.
    pub fn describe(&self, key: &str) -> String {
        let source = match (&self.env, &self.file) {
            (Some(v), _) => format!("env {v}"),
            (_, Some(p)) => format!("file {}", p.display()),
            _ => "no source".into(),
        };
        match self.resolve(key) {
            Ok(_) => format!("{key}: set (from {source})"),
            Err(_) => format!("{key}: NOT SET (from {source})"),
        }
    }
}

/// A resolved secret. Its `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The value itself: only for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
