//! What to request: the URL template expanded into request streams (one per combination of the
//! template variables), the position inside a stream (page number or next link), and the
//! redaction that keeps the credential out of every URL that is logged, reported or stored.
use reqwest::Url;

use super::config::{AuthKind, ExtractConfig, PaginationMode};
use crate::settings::Secret;

/// The variables of a URL template (`{name}`), in order of first appearance.
pub fn template_vars(template: &str) -> Result<Vec<String>, String> {
    let mut vars = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(format!(
                "unbalanced '}}' in URL template at `{}`",
                &rest[open..]
            ));
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in URL template at `{}`", &rest[open..]))?;
        let name = &after[..close];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`{{{name}}}` is not a template variable (letters, digits, '_')"
            ));
        }
        if !vars.iter().any(|v| v == name) {
            vars.push(name.to_string());
        }
        rest = &after[close + 1..];
    }
    Ok(vars)
}

/// Percent-encodes a value for a URL path segment or query (RFC 3986 unreserved kept).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One expanded request stream: the template with every variable bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    /// Stable id, also the checkpoint key suffix: `queue=RANKED_SOLO_5x5,tier=GOLD,division=I`
    /// (`all` when the template has no variables).
    pub id: String,
    /// The expanded URL (no page parameter, no credential).
    pub url: String,
}

/// Expands the template over the cartesian product of its variables (first variable outermost).
pub fn expand(cfg: &ExtractConfig) -> Result<Vec<Stream>, String> {
    let vars = template_vars(&cfg.url)?;
    let mut out = vec![(Vec::<String>::new(), cfg.url.clone())];
    for var in &vars {
        let values = cfg
            .vars
            .get(var)
            .ok_or_else(|| format!("no values for template variable {{{var}}}"))?;
        let mut next = Vec::with_capacity(out.len() * values.len());
        for (id, url) in &out {
            for v in values {
                let mut id = id.clone();
                id.push(format!("{var}={v}"));
                next.push((id, url.replace(&format!("{{{var}}}"), &encode(v))));
            }
        }
        out = next;
    }
    out.into_iter()
        .map(|(id, url)| {
            Url::parse(&url).map_err(|e| format!("expanded URL `{url}` does not parse: {e}"))?;
            Ok(Stream {
                id: if id.is_empty() {
                    "all".into()
                } else {
                    id.join(",")
                },
                url,
            })
        })
        .collect()
}

/// Where a stream continues.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// `page` mode: the next page number.
    Page(u64),
    /// `next_link` mode: the next URL (credential stripped); `none`/`next_link` start: the stream URL.
    Url(String),
    /// The stream is finished for this pass.
    Done,
}

impl Position {
    /// The first position of a stream.
    pub fn start(cfg: &ExtractConfig, stream: &Stream) -> Position {
        match cfg.pagination.mode {
            PaginationMode::Page => Position::Page(cfg.pagination.start),
            PaginationMode::NextLink | PaginationMode::None => Position::Url(stream.url.clone()),
        }
    }
}

/// Builds request URLs and redacts them. Holds the credential; `Debug` never shows it.
#[derive(Clone)]
pub struct Auth {
    kind: AuthKind,
    name: String,
    prefix: String,
    token: Option<Secret>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("token", &"***")
            .finish()
    }
}

impl Auth {
    pub fn new(cfg: &ExtractConfig, token: Option<Secret>) -> Self {
        Auth {
            kind: cfg.auth.kind,
            name: cfg.auth.name.clone(),
            prefix: cfg.auth.prefix.clone(),
            token,
        }
    }

    /// The header to send, if the credential goes in a header.
    pub fn header(&self) -> Option<(&str, String)> {
        match (&self.kind, &self.token) {
            (AuthKind::Header, Some(t)) => {
                Some((self.name.as_str(), format!("{}{}", self.prefix, t.expose())))
            }
            _ => None,
        }
    }

    /// The URL actually requested: `url` plus the credential when it goes in the query.
    pub fn request_url(&self, url: &Url) -> Url {
        let mut u = url.clone();
        if let (AuthKind::Query, Some(t)) = (&self.kind, &self.token) {
            u.query_pairs_mut().append_pair(&self.name, t.expose());
        }
        u
    }

    /// `url` without the credential query parameter (for URLs that came from the API, e.g. a
    /// next link, before they are stored in a checkpoint).
    pub fn strip(&self, url: &Url) -> Url {
        if self.kind != AuthKind::Query || !url.query_pairs().any(|(k, _)| k == self.name) {
            return url.clone();
        }
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != &self.name)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut u = url.clone();
        if kept.is_empty() {
            u.set_query(None);
        } else {
            u.query_pairs_mut().clear().extend_pairs(kept);
        }
        u
    }

    /// Any text with the credential replaced by `***` (for messages that might quote a URL).
    pub fn redact(&self, text: &str) -> String {
        match &self.token {
            Some(t) if !t.expose().is_empty() => {
                let mut out = text.replace(t.expose(), "***");
                let encoded = encode(t.expose());
                if encoded != t.expose() {
                    out = out.replace(&encoded, "***");
                }
                out
            }
            _ => text.to_string(),
        }
    }
}

/// The URL of a position (without the credential), or `None` when the stream is done.
pub fn position_url(
    cfg: &ExtractConfig,
    stream: &Stream,
    pos: &Position,
) -> Result<Option<Url>, String> {
    match pos {
        Position::Done => Ok(None),
        Position::Page(n) => {
            let mut u = Url::parse(&stream.url).map_err(|e| format!("bad stream URL: {e}"))?;
            let param = &cfg.pagination.param;
            let kept: Vec<(String, String)> = u
                .query_pairs()
                .filter(|(k, _)| k != param)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            u.query_pairs_mut()
                .clear()
                .extend_pairs(kept)
                .append_pair(param, &n.to_string());
            Ok(Some(u))
        }
        Position::Url(s) => Url::parse(s)
            .map(Some)
            .map_err(|e| format!("bad next link `{s}`: {e}")),
    }
}

/// Resolves a next link (possibly relative) against the URL it came from.
pub fn resolve_link(base: &Url, link: &str) -> Result<Url, String> {
    base.join(link)
        .map_err(|e| format!("next link `{link}` is not a URL: {e}"))
}

/// The `rel="next"` target of an RFC 8288 `Link` header, if any.
pub fn link_header_next(value: &str) -> Option<String> {
    for part in value.split(',') {
        let part = part.trim();
        let (target, params) = match part.split_once(';') {
            Some((t, p)) => (t.trim(), p),
            None => continue,
        };
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p.eq_ignore_ascii_case("rel=\"next\"") || p.eq_ignore_ascii_case("rel=next")
        });
        if is_next && target.starts_with('<') && target.ends_with('>') {
            return Some(target[1..target.len() - 1].to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::SecretRef;
    use std::collections::BTreeMap;

    fn cfg(url: &str, vars: &[(&str, &[&str])]) -> ExtractConfig {
        ExtractConfig {
            url: url.into(),
            vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        }
    }

    #[test]
    fn template_expands_to_the_cartesian_product_in_template_order() {
        let c = cfg(
            "http://h/e/{queue}/{tier}/{division}",
            &[
                ("division", &["I", "II"]),
                ("queue", &["Q"]),
                ("tier", &["GOLD", "IRON"]),
            ],
        );
        let s = expand(&c).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].id, "queue=Q,tier=GOLD,division=I");
        assert_eq!(s[0].url, "http://h/e/Q/GOLD/I");
        assert_eq!(s[3].url, "http://h/e/Q/IRON/II");
    }

    #[test]
    fn values_are_percent_encoded_and_no_vars_is_one_stream() {
        let c = cfg("http://h/x/{a}", &[("a", &["x y/z"])]);
        assert_eq!(expand(&c).unwrap()[0].url, "http://h/x/x%20y%2Fz");
        let c = cfg("http://h/all", &[]);
        let s = expand(&c).unwrap();
        assert_eq!((s.len(), s[0].id.as_str()), (1, "all"));
    }

    #[test]
    fn bad_templates_are_rejected() {
        assert!(template_vars("http://h/{a").is_err());
        assert!(template_vars("http://h/a}").is_err());
        assert!(template_vars("http://h/{a b}").is_err());
        assert_eq!(template_vars("http://h/{a}/{b}/{a}").unwrap(), ["a", "b"]);
    }

    #[test]
    fn page_positions_set_the_page_parameter_once() {
        let c = cfg("http://h/x?page=9&q=1", &[]);
        let s = &expand(&c).unwrap()[0];
        let u = position_url(&c, s, &Position::Page(3)).unwrap().unwrap();
        assert_eq!(u.as_str(), "http://h/x?q=1&page=3");
        assert_eq!(position_url(&c, s, &Position::Done).unwrap(), None);
    }

    #[test]
    fn query_credentials_are_added_on_the_wire_only_and_redacted_everywhere() {
        let mut c = cfg("http://h/x", &[]);
        c.auth.kind = AuthKind::Query;
        c.auth.name = "api_key".into();
        c.auth.token = SecretRef::from_env("X");
        let auth = Auth::new(&c, Some(Secret::new("RGAPI-s3cr3t/+")));
        let base = Url::parse("http://h/x?page=2").unwrap();
        let wire = auth.request_url(&base);
        assert!(wire.as_str().contains("api_key="));
        assert_eq!(auth.strip(&wire), base);
        let redacted = auth.redact(wire.as_str());
        assert!(!redacted.contains("s3cr3t"), "{redacted}");
        assert!(!format!("{auth:?}").contains("s3cr3t"));
        assert!(auth.header().is_none());
    }

    #[test]
    fn link_header_next_is_found() {
        let v = r#"<http://h/x?page=1>; rel="prev", <http://h/x?page=3>; rel="next""#;
        assert_eq!(link_header_next(v).as_deref(), Some("http://h/x?page=3"));
        assert_eq!(link_header_next(r#"<http://h/x>; rel="last""#), None);
        let base = Url::parse("http://h/api/x?page=1").unwrap();
        assert_eq!(
            resolve_link(&base, "/api/x?page=2").unwrap().as_str(),
            "http://h/api/x?page=2"
        );
    }
}
