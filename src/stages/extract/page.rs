//! Splits one response body into records.
//!
//! The rules, in order:
//! - The body must be UTF-8 and one complete JSON document, and the records path must lead
//!   to an array. Otherwise the *page* is bad (truncated body, an HTML error page, a proxy
//!   answering instead of the API): that is a transport failure and the request is retried.
//! - Each array element is then judged on its own. An object whose key field holds a
//!   non-empty string or a number is a record: its bytes go to `raw` exactly as received.
//! - Anything else is a poison record and goes to `dead-letter` with its bytes as they stood
//!   on the page and a reason: `invalid_json` (a string element holding broken JSON text),
//!   `not_an_object` (a number, array, null, boolean, or a string holding valid JSON), or
//!   `missing_key` (an object without a usable key). The page's other records are unaffected.
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// A good record: its key and where its bytes are in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoodRecord {
    pub key: String,
    pub range: Range<usize>,
    /// Position in the page's array.
    pub index: usize,
}

/// A poison record: why, and where its bytes are in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// Position in the page's array.
    pub index: usize,
    /// `invalid_json`, `not_an_object` or `missing_key`.
    pub kind: &'static str,
    pub message: String,
    pub range: Range<usize>,
}

/// A parsed page; record bytes are ranges of `body`.
#[derive(Debug, Default)]
pub struct ParsedPage {
    pub body: Vec<u8>,
    pub records: Vec<GoodRecord>,
    pub dead: Vec<BadRecord>,
    /// The next link found at `next_field`, if configured and present.
    pub next_link: Option<String>,
}

impl ParsedPage {
    /// Elements on the page (good + poison); 0 marks the end in `page` pagination.
    pub fn elements(&self) -> usize {
        self.records.len() + self.dead.len()
    }
    pub fn bytes_of(&self, r: &Range<usize>) -> &[u8] {
        &self.body[r.clone()]
    }
}

/// Why a whole page could not be read (retriable: the next attempt may get a good body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageError {
    NotUtf8,
    NotJson(String),
    Shape(String),
}

impl fmt::Display for PageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PageError::NotUtf8 => f.write_str("body is not UTF-8"),
            PageError::NotJson(e) => write!(f, "body is not one complete JSON document ({e})"),
            PageError::Shape(e) => f.write_str(e),
        }
    }
}

/// Splits a dotted path into segments (empty string = no segments).
pub fn path(p: &str) -> Vec<String> {
    if p.is_empty() {
        Vec::new()
    } else {
        p.split('.').map(str::to_string).collect()
    }
}

/// Map keys, borrowed when they have no escapes.
#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// Finds one field of a JSON object without building the whole map.
struct Field<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Field<'_> {
    type Value = Option<&'de RawValue>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            if found.is_none() && k == self.0 {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

fn first_byte(raw: &RawValue) -> u8 {
    raw.get()
        .bytes()
        .find(|b| !b.is_ascii_whitespace())
        .unwrap_or(b'?')
}

/// Follows a dotted path through objects. `Ok(None)` when a segment is missing or a value on
/// the way is not an object.
fn lookup<'a>(mut raw: &'a RawValue, path: &[String]) -> Result<Option<&'a RawValue>, String> {
    for seg in path {
        if first_byte(raw) != b'{' {
            return Ok(None);
        }
        let mut de = serde_json::Deserializer::from_str(raw.get());
        match Field(seg).deserialize(&mut de).map_err(|e| e.to_string())? {
            Some(v) => raw = v,
            None => return Ok(None),
        }
    }
    Ok(Some(raw))
}

fn type_name(b: u8) -> &'static str {
    match b {
        b'{' => "an object",
        b'[' => "an array",
        b'"' => "a string",
        b'n' => "null",
        b't' | b'f' => "a boolean",
        _ => "a number",
    }
}

/// The record key: a non-empty string, or a number (its JSON text).
fn key_of(element: &RawValue, key_path: &[String]) -> Result<String, String> {
    let shown = key_path.join(".");
    let v =
        lookup(element, key_path)?.ok_or_else(|| format!("record has no key field `{shown}`"))?;
    match first_byte(v) {
        b'"' => {
            let s: String = serde_json::from_str(v.get()).map_err(|e| e.to_string())?;
            if s.is_empty() {
                Err(format!("key field `{shown}` is an empty string"))
            } else {
                Ok(s)
            }
        }
        b'-' | b'0'..=b'9' => Ok(v.get().trim().to_string()),
        b => Err(format!(
            "key field `{shown}` is {}, not a string or number",
            type_name(b)
        )),
    }
}

fn classify(element: &RawValue, key_path: &[String]) -> Result<String, (&'static str, String)> {
    match first_byte(element) {
        b'{' => key_of(element, key_path).map_err(|m| ("missing_key", m)),
        b'"' => {
            let text: String = serde_json::from_str(element.get())
                .map_err(|e| ("invalid_json", format!("undecodable string element: {e}")))?;
            match serde_json::from_str::<IgnoredAny>(&text) {
                Err(e) => Err((
                    "invalid_json",
                    format!("element is a string that is not valid JSON ({e})"),
                )),
                Ok(_) => Err((
                    "not_an_object",
                    "element is a string holding JSON text, not a JSON object".into(),
                )),
            }
        }
        b => Err((
            "not_an_object",
            format!("element is {}, not a JSON object", type_name(b)),
        )),
    }
}

/// Parses a body. `records_path` and `key_path` are split paths; `next_field` the split path of
/// the next link in the body (next-link pagination).
pub fn parse_page(
    body: Vec<u8>,
    records_path: &[String],
    key_path: &[String],
    next_field: Option<&[String]>,
) -> Result<ParsedPage, PageError> {
    let text = std::str::from_utf8(&body).map_err(|_| PageError::NotUtf8)?;
    let root: &RawValue =
        serde_json::from_str(text).map_err(|e| PageError::NotJson(e.to_string()))?;
    let array = lookup(root, records_path)
        .map_err(PageError::NotJson)?
        .ok_or_else(|| {
            PageError::Shape(format!("no field `{}` in the body", records_path.join(".")))
        })?;
    if first_byte(array) != b'[' {
        return Err(PageError::Shape(format!(
            "records at `{}` are {}, not an array",
            if records_path.is_empty() {
                "(root)".to_string()
            } else {
                records_path.join(".")
            },
            type_name(first_byte(array))
        )));
    }
    let elements: Vec<&RawValue> =
        serde_json::from_str(array.get()).map_err(|e| PageError::NotJson(e.to_string()))?;
    let next_link = match next_field {
        None => None,
        Some(p) => match lookup(root, p).map_err(PageError::NotJson)? {
            None => None,
            Some(v) => match first_byte(v) {
                b'n' => None,
                b'"' => {
                    let s: String = serde_json::from_str(v.get())
                        .map_err(|e| PageError::NotJson(e.to_string()))?;
                    (!s.is_empty()).then_some(s)
                }
                b => {
                    return Err(PageError::Shape(format!(
                        "next link `{}` is {}, not a string",
                        p.join("."),
                        type_name(b)
                    )))
                }
            },
        },
    };
    let base = text.as_ptr() as usize;
    let mut records = Vec::with_capacity(elements.len());
    let mut dead = Vec::new();
    for (index, el) in elements.iter().enumerate() {
        let start = el.get().as_ptr() as usize - base;
        let range = start..start + el.get().len();
        match classify(el, key_path) {
            Ok(key) => records.push(GoodRecord { key, range, index }),
            Err((kind, message)) => dead.push(BadRecord {
                index,
                kind,
                message,
                range,
            }),
        }
    }
    drop(elements);
    Ok(ParsedPage {
        body,
        records,
        dead,
        next_link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ParsedPage, PageError> {
        parse_page(body.as_bytes().to_vec(), &[], &path("summonerId"), None)
    }

    #[test]
    fn good_records_keep_their_bytes_exactly() {
        let body = r#"[ {"summonerId":"a","wins":1} ,{"wins":2, "summonerId": 7 }]"#;
        let p = parse(body).unwrap();
        assert_eq!(p.records.len(), 2);
        assert_eq!(p.records[0].key, "a");
        assert_eq!(
            p.bytes_of(&p.records[0].range),
            br#"{"summonerId":"a","wins":1}"#
        );
        assert_eq!(p.records[1].key, "7");
        assert_eq!(
            p.bytes_of(&p.records[1].range),
            br#"{"wins":2, "summonerId": 7 }"#
        );
    }

    #[test]
    fn poison_elements_are_sorted_by_kind_and_the_rest_survive() {
        let body = r#"[{"summonerId":"a"}, "{\"summonerId\":\"b\",\"wi", 42, null,
            {"wins":1}, {"summonerId":""}, {"summonerId":null}, "{\"x\":1}", {"summonerId":"c"}]"#;
        let p = parse(body).unwrap();
        let keys: Vec<_> = p.records.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["a", "c"]);
        let kinds: Vec<_> = p.dead.iter().map(|d| (d.index, d.kind)).collect();
        assert_eq!(
            kinds,
            [
                (1, "invalid_json"),
                (2, "not_an_object"),
                (3, "not_an_object"),
                (4, "missing_key"),
                (5, "missing_key"),
                (6, "missing_key"),
                (7, "not_an_object"),
            ]
        );
        assert_eq!(p.bytes_of(&p.dead[1].range), b"42");
        assert!(p.dead[2].message.contains("null"), "{}", p.dead[2].message);
        assert!(p.dead[3].message.contains("summonerId"));
    }

    #[test]
    fn a_truncated_or_foreign_body_fails_the_whole_page() {
        assert!(matches!(
            parse(r#"[{"summonerId":"a"},{"summ"#),
            Err(PageError::NotJson(_))
        ));
        assert!(matches!(
            parse("<html>502</html>"),
            Err(PageError::NotJson(_))
        ));
        assert!(matches!(parse(r#"{"a":1}"#), Err(PageError::Shape(_))));
        assert!(matches!(
            parse_page(vec![0xff, 0xfe], &[], &[], None),
            Err(PageError::NotUtf8)
        ));
        assert_eq!(parse("[]").unwrap().elements(), 0);
    }

    #[test]
    fn records_and_next_link_by_field_path() {
        let body =
            r#"{"meta":{"n":1},"data":{"items":[{"id":{"v":"k1"}}]},"links":{"next":"/x?c=2"}}"#;
        let p = parse_page(
            body.as_bytes().to_vec(),
            &path("data.items"),
            &path("id.v"),
            Some(&path("links.next")),
        )
        .unwrap();
        assert_eq!(p.records[0].key, "k1");
        assert_eq!(p.next_link.as_deref(), Some("/x?c=2"));
        let body = r#"{"data":{"items":[]},"links":{"next":null}}"#;
        let p = parse_page(
            body.as_bytes().to_vec(),
            &path("data.items"),
            &path("id"),
            Some(&path("links.next")),
        )
        .unwrap();
        assert_eq!((p.elements(), p.next_link), (0, None));
    }

    #[test]
    fn escaped_field_names_still_match() {
        let p = parse(r#"[{"summoner\u0049d":"z"}]"#).unwrap();
        assert_eq!(p.records[0].key, "z");
    }
}
