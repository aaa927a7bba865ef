//! Parsing a raw record: only the top-level members the mapping reads become JSON values;
//! every other member is checked as JSON and skipped without building it. A raw record of
//! the league API has a dozen members, each a heap string key plus a value in an
//! insertion-ordered map when parsed whole: most of clean's allocations per record.
//!
//! The result is what parsing the whole object and looking members up gave before: the same
//! errors for bad JSON, the last of duplicate members wins, and a member named with a dot
//! (`"a.b"`) is found before the path `a` → `b`.
use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value as Json;

use super::plan::{Plan, Source};

/// The top-level member names the plans read, and for each plan reading raw JSON where its
/// value is: the index of its `from` name and of its path's first step (`a` of `a.b`).
#[derive(Debug, Clone)]
pub(super) struct Members {
    names: Vec<Box<str>>,
    /// Per plan: `(from, first step)` indexes into `names`; `None` for plans not read from
    /// the raw record.
    at: Vec<Option<(usize, Option<usize>)>>,
}

/// A parsed raw record: the values of [`Members`]' names (`None`: absent), or the JSON type
/// of a record that is not an object.
pub(super) enum Picked {
    Object(Vec<Option<Json>>),
    NotAnObject(&'static str),
}

impl Members {
    pub(super) fn new(plans: &[Plan]) -> Members {
        let mut names: Vec<Box<str>> = Vec::new();
        let mut index = |name: &str| match names.iter().position(|n| &**n == name) {
            Some(i) => i,
            None => {
                names.push(name.into());
                names.len() - 1
            }
        };
        let at = plans
            .iter()
            .map(|p| match &p.source {
                Source::Raw { from, path, .. } => {
                    let from = index(from);
                    let first = (path.len() >= 2).then(|| index(&path[0]));
                    Some((from, first))
                }
                _ => None,
            })
            .collect();
        Members { names, at }
    }

    /// Parses `raw` (the whole text is checked as JSON, trailing characters included).
    pub(super) fn parse(&self, raw: &[u8]) -> Result<Picked, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(raw);
        let picked = Pick { names: &self.names }.deserialize(&mut de)?;
        de.end()?;
        Ok(picked)
    }

    /// The value plan `plan` reads: the member named `from`, else the path through nested
    /// objects (as [`super::coerce::lookup`] does on a whole object).
    pub(super) fn lookup<'a>(
        &self,
        values: &'a [Option<Json>],
        plan: usize,
        path: &[String],
    ) -> Option<&'a Json> {
        let (from, first) = self.at[plan]?;
        if let Some(v) = &values[from] {
            return Some(v);
        }
        let mut cur = values[first?].as_ref()?;
        for step in &path[1..] {
            cur = cur.as_object()?.get(step)?;
        }
        Some(cur)
    }
}

struct Pick<'m> {
    names: &'m [Box<str>],
}

impl<'de> DeserializeSeed<'de> for Pick<'_> {
    type Value = Picked;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Picked, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pick<'_> {
    type Value = Picked;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Picked, A::Error> {
        let mut values: Vec<Option<Json>> = vec![None; self.names.len()];
        while let Some(key) = map.next_key_seed(Key)? {
            match self.names.iter().position(|n| **n == *key) {
                Some(i) => values[i] = Some(map.next_value()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Picked::Object(values))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Picked, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Picked::NotAnObject("array"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Picked, E> {
        Ok(Picked::NotAnObject("boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Picked, E> {
        Ok(Picked::NotAnObject("number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Picked, E> {
        Ok(Picked::NotAnObject("number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Picked, E> {
        Ok(Picked::NotAnObject("number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Picked, E> {
        Ok(Picked::NotAnObject("string"))
    }

    fn visit_unit<E>(self) -> Result<Picked, E> {
        Ok(Picked::NotAnObject("null"))
    }
}

/// A member name, borrowed from the raw bytes unless it has escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Members {
        Members {
            names: names.iter().map(|n| (*n).into()).collect(),
            at: Vec::new(),
        }
    }

    fn object(p: Picked) -> Vec<Option<Json>> {
        match p {
            Picked::Object(v) => v,
            Picked::NotAnObject(t) => panic!("a {t}"),
        }
    }

    #[test]
    fn only_the_named_members_are_kept_and_the_last_duplicate_wins() {
        let m = members(&["wins", "a.b", "tier", "absent"]);
        let got = object(
            m.parse(br#"{"wins": 1, "skip": {"x": [1, 2, {"y": null}]}, "a.b": "dot", "ti\u0065r": "GOLD", "wins": 2}"#)
                .unwrap(),
        );
        assert_eq!(
            got,
            vec![
                Some(Json::from(2)),
                Some(Json::from("dot")),
                Some(Json::from("GOLD")),
                None
            ]
        );
    }

    #[test]
    fn bad_json_anywhere_is_an_error_as_when_parsed_whole() {
        let m = members(&["wins"]);
        for bad in [
            &br#"{"wins": 1, "skip": [1, }"#[..],
            br#"{"wins": 1} trailing"#,
            br#"{"wins": 1"#,
            b"\xff",
        ] {
            let whole = serde_json::from_slice::<Json>(bad).unwrap_err().to_string();
            let ours = m.parse(bad).err().expect("an error").to_string();
            assert_eq!(ours, whole, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_record_that_is_not_an_object_says_what_it_is() {
        let m = members(&["wins"]);
        for (raw, ty) in [
            ("[1, {\"a\": 2}]", "array"),
            ("true", "boolean"),
            ("-1.5", "number"),
            ("7", "number"),
            ("\"s\"", "string"),
            ("null", "null"),
        ] {
            match m.parse(raw.as_bytes()).unwrap() {
                Picked::NotAnObject(t) => assert_eq!(t, ty, "{raw}"),
                Picked::Object(_) => panic!("{raw} is not an object"),
            }
        }
    }
}
