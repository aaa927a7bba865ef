//! The sample dataset: entry `i` is a pure function of the seed and `i`, generated when a page
//! asks for it (nothing is held in memory, so millions of entries cost nothing), and tests can
//! compute the exact set the extractor must deliver.
//!
//! Layout: the streams are queue × tier × division (in that order); stream `c` of `C` holds
//! entries `[c·N/C, (c+1)·N/C)`, its page `p` (1-based) the `page_size` entries from
//! `(p-1)·page_size` on, and every page past the last is an empty array.
use std::fmt::Write;
use std::ops::Range;

pub use crate::stages::extract::config::{DEFAULT_DIVISIONS, DEFAULT_QUEUES, DEFAULT_TIERS};

/// The splitmix64 finaliser: a bijection on u64 with good avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small deterministic generator (splitmix64); stable across versions, unlike `rand`'s.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// What the extractor must make of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Goes to `raw` with this key.
    Record { key: String },
    /// Goes to `dead-letter` with this `etl.error.kind`.
    Poison { kind: &'static str },
}

const NAME_PARTS: &[&str] = &[
    "ka", "zu", "mi", "ro", "th", "ex", "ly", "na", "sh", "vo", "rei", "dra", "gon", "fa", "ker",
    "ion", "tal", "mo", "pix", "qui",
];
/// League points from which an entry is in a promotion series and carries `miniSeries`.
pub const MINI_SERIES_LP: u64 = 100;

const OPTIONAL: [&str; 8] = [
    "summonerName",
    "leaguePoints",
    "wins",
    "losses",
    "veteran",
    "inactive",
    "freshBlood",
    "hotStreak",
];

/// The dataset's shape and the per-entry faults (malformed, missing fields, drift).
#[derive(Debug, Clone)]
pub struct Dataset {
    pub records: u64,
    pub page_size: u64,
    pub seed: u64,
    pub queues: Vec<String>,
    pub tiers: Vec<String>,
    pub divisions: Vec<String>,
    /// Share of entries that are poison records (broken JSON string, no key, not an object).
    pub malformed_rate: f64,
    /// Share of entries missing one to three non-key fields (omitted or null).
    pub missing_rate: f64,
    /// From page `N+1` of each stream on, numeric distributions shift.
    pub drift_after_pages: Option<u64>,
}

impl Dataset {
    /// Default league layout with `records` entries and no faults.
    pub fn new(records: u64, page_size: u64, seed: u64) -> Self {
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        Dataset {
            records,
            page_size: page_size.max(1),
            seed,
            queues: v(DEFAULT_QUEUES),
            tiers: v(DEFAULT_TIERS),
            divisions: v(DEFAULT_DIVISIONS),
            malformed_rate: 0.0,
            missing_rate: 0.0,
            drift_after_pages: None,
        }
    }

    pub fn streams(&self) -> u64 {
        (self.queues.len() * self.tiers.len() * self.divisions.len()) as u64
    }

    /// The stream index of a (queue, tier, division), if all three are known.
    pub fn stream_index(&self, queue: &str, tier: &str, division: &str) -> Option<u64> {
        let q = self.queues.iter().position(|x| x == queue)?;
        let t = self.tiers.iter().position(|x| x == tier)?;
        let d = self.divisions.iter().position(|x| x == division)?;
        Some(((q * self.tiers.len() + t) * self.divisions.len() + d) as u64)
    }

    fn stream_names(&self, c: u64) -> (&str, &str, &str) {
        let c = c as usize;
        let d = c % self.divisions.len();
        let t = (c / self.divisions.len()) % self.tiers.len();
        let q = c / (self.divisions.len() * self.tiers.len());
        (&self.queues[q], &self.tiers[t], &self.divisions[d])
    }

    fn stream_start(&self, c: u64) -> u64 {
        ((c as u128 * self.records as u128) / self.streams().max(1) as u128) as u64
    }

    /// Entry indices of stream `c`.
    pub fn stream_range(&self, c: u64) -> Range<u64> {
        self.stream_start(c)..self.stream_start(c + 1)
    }

    /// Entry indices on page `page` (1-based) of stream `c`; empty past the end.
    pub fn page_range(&self, c: u64, page: u64) -> Range<u64> {
        let r = self.stream_range(c);
        if page == 0 {
            return r.start..r.start;
        }
        let start = r
            .start
            .saturating_add((page - 1).saturating_mul(self.page_size))
            .min(r.end);
        start..start.saturating_add(self.page_size).min(r.end)
    }

    /// Non-empty pages of stream `c` (a full pass requests one more: the empty one).
    pub fn pages(&self, c: u64) -> u64 {
        let n = self.stream_range(c).end - self.stream_range(c).start;
        n.div_ceil(self.page_size)
    }

    fn stream_of(&self, i: u64) -> u64 {
        let n = self.streams().max(1);
        let mut c = ((i as u128 * n as u128) / self.records.max(1) as u128) as u64;
        c = c.min(n - 1);
        while c + 1 < n && self.stream_start(c + 1) <= i {
            c += 1;
        }
        while c > 0 && self.stream_start(c) > i {
            c -= 1;
        }
        c
    }

    fn h(&self, i: u64, salt: u64) -> u64 {
        mix(mix(self.seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)) ^ i)
    }

    /// The entry's key (`summonerId`): unique per index (the first half is a bijection of `i`).
    pub fn key(&self, i: u64) -> String {
        let a = mix(i ^ mix(self.seed));
        let b = self.h(i, 1);
        format!("{a:016x}{b:016x}")
    }

    fn poison_kind(&self, i: u64) -> Option<u64> {
        (unit(self.h(i, 2)) < self.malformed_rate).then(|| self.h(i, 3) % 3)
    }

    /// What the extractor must do with entry `i`.
    pub fn expected(&self, i: u64) -> Expected {
        match self.poison_kind(i) {
            None => Expected::Record { key: self.key(i) },
            Some(0) => Expected::Poison {
                kind: "invalid_json",
            },
            Some(1) => Expected::Poison {
                kind: "missing_key",
            },
            Some(_) => Expected::Poison {
                kind: "not_an_object",
            },
        }
    }

    /// Whether entry `i` is on a drifted page.
    pub fn drifted(&self, i: u64) -> bool {
        let Some(after) = self.drift_after_pages else {
            return false;
        };
        let c = self.stream_of(i);
        let page = (i - self.stream_start(c)) / self.page_size + 1;
        page > after
    }

    /// Writes entry `i` as it appears on a page.
    pub fn write_entry(&self, i: u64, out: &mut String) {
        match self.poison_kind(i) {
            None => self.write_object(i, true, out),
            Some(0) => {
                // A string holding JSON text cut short: broken JSON inside valid JSON.
                let mut obj = String::with_capacity(300);
                self.write_object(i, true, &mut obj);
                let cut = obj.len() / 2;
                out.push('"');
                out.push_str(&obj[..cut].replace('"', "\\\""));
                out.push('"');
            }
            Some(1) => self.write_object(i, false, out),
            Some(_) => {
                if i % 2 == 0 {
                    out.push_str("null");
                } else {
                    let _ = write!(out, "{i}");
                }
            }
        }
    }

    /// The entry as a standalone JSON document (what `raw` must hold for a good entry).
    pub fn entry_json(&self, i: u64) -> String {
        let mut s = String::with_capacity(300);
        self.write_entry(i, &mut s);
        s
    }

    fn write_object(&self, i: u64, with_key: bool, out: &mut String) {
        let c = self.stream_of(i);
        let (queue, tier, division) = self.stream_names(c);
        let drift = self.drifted(i);
        let mut g = Gen(self.h(i, 4));

        let mut name = String::with_capacity(16);
        for k in 0..(2 + g.below(2)) {
            let part = NAME_PARTS[g.below(NAME_PARTS.len() as u64) as usize];
            if k == 0 {
                let mut ch = part.chars();
                if let Some(f) = ch.next() {
                    name.push(f.to_ascii_uppercase());
                    name.push_str(ch.as_str());
                }
            } else {
                name.push_str(part);
            }
        }
        if g.below(3) == 0 {
            let _ = write!(name, "{}", g.below(1000));
        }
        let lp = if drift {
            50 + g.below(51)
        } else {
            g.below(101)
        };
        let games = if drift {
            100 + g.below(900)
        } else {
            20 + g.below(480)
        };
        let spread = (g.unit() + g.unit() + g.unit() + g.unit() - 2.0) * 0.05;
        let winrate = (if drift { 0.56 } else { 0.5 } + spread).clamp(0.0, 1.0);
        let wins = (games as f64 * winrate).round() as u64;
        let losses = games - wins.min(games);
        let veteran = g.below(100) < if drift { 30 } else { 10 };
        let inactive = g.below(100) < 2;
        let fresh = g.below(100) < if drift { 5 } else { 15 };
        let hot = g.below(100) < if drift { 35 } else { 10 };

        // Missing fields: one to three non-key fields omitted or null.
        let mut missing = [None::<bool>; OPTIONAL.len()];
        if unit(self.h(i, 5)) < self.missing_rate {
            let mut m = Gen(self.h(i, 6));
            for _ in 0..(1 + m.below(3)) {
                let f = m.below(OPTIONAL.len() as u64) as usize;
                missing[f] = Some(m.below(2) == 0);
            }
        }
        let field =
            |out: &mut String, idx: usize, name: &str, value: &dyn std::fmt::Display| match missing
                [idx]
            {
                Some(true) => {}
                Some(false) => {
                    let _ = write!(out, ",\"{name}\":null");
                }
                None => {
                    let _ = write!(out, ",\"{name}\":{value}");
                }
            };
        let _ = write!(
            out,
            "{{\"queueType\":\"{queue}\",\"tier\":\"{tier}\",\"rank\":\"{division}\""
        );
        if with_key {
            let _ = write!(out, ",\"summonerId\":\"{}\"", self.key(i));
        }
        field(out, 0, "summonerName", &format_args!("\"{name}\""));
        field(out, 1, "leaguePoints", &lp);
        field(out, 2, "wins", &wins);
        field(out, 3, "losses", &losses);
        field(out, 4, "veteran", &veteran);
        field(out, 5, "inactive", &inactive);
        field(out, 6, "freshBlood", &fresh);
        field(out, 7, "hotStreak", &hot);
        if lp >= MINI_SERIES_LP {
            self.write_mini_series(i, division, out);
        }
        out.push('}');
    }

    /// A promotion series, as the league API shows it for an entry at 100 LP: best of 5
    /// (`target` 3) into the next tier from division I, best of 3 (`target` 2) otherwise;
    /// `progress` one letter per game, W, L or N (not played yet).
    fn write_mini_series(&self, i: u64, division: &str, out: &mut String) {
        let mut g = Gen(self.h(i, 7));
        let target = if division == "I" { 3 } else { 2 };
        let wins = g.below(target);
        let losses = g.below(target);
        let mut progress = String::with_capacity(5);
        for k in 0..(2 * target - 1) {
            progress.push(if k < wins {
                'W'
            } else if k < wins + losses {
                'L'
            } else {
                'N'
            });
        }
        let _ = write!(
            out,
            ",\"miniSeries\":{{\"target\":{target},\"wins\":{wins},\"losses\":{losses},\"progress\":\"{progress}\"}}"
        );
    }

    /// The JSON array of page `page` of stream `c`.
    pub fn write_page(&self, c: u64, page: u64, out: &mut String) {
        out.push('[');
        for (n, i) in self.page_range(c, page).enumerate() {
            if n > 0 {
                out.push(',');
            }
            self.write_entry(i, out);
        }
        out.push(']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_partition_the_entries_and_pages_cover_them() {
        let d = Dataset::new(1003, 10, 7);
        assert_eq!(d.streams(), 28);
        let mut seen = 0;
        for c in 0..d.streams() {
            let r = d.stream_range(c);
            assert_eq!(r.start, seen);
            seen = r.end;
            let mut covered = 0;
            for p in 1..=d.pages(c) {
                covered += d.page_range(c, p).count() as u64;
            }
            assert_eq!(covered, r.end - r.start);
            assert!(d.page_range(c, d.pages(c) + 1).is_empty());
            for i in r {
                assert_eq!(d.stream_of(i), c);
            }
        }
        assert_eq!(seen, 1003);
    }

    #[test]
    fn entries_are_deterministic_valid_json_with_the_league_fields() {
        let d = Dataset::new(100, 10, 42);
        let a = d.entry_json(5);
        assert_eq!(a, Dataset::new(100, 10, 42).entry_json(5));
        assert_ne!(a, Dataset::new(100, 10, 43).entry_json(5));
        let v: serde_json::Value = serde_json::from_str(&a).unwrap();
        for f in ["summonerId", "queueType", "tier", "rank"]
            .into_iter()
            .chain(OPTIONAL)
        {
            assert!(v.get(f).is_some(), "{f} missing in {a}");
        }
        assert_eq!(v["summonerId"], d.key(5));
        let keys: std::collections::HashSet<_> = (0..100).map(|i| d.key(i)).collect();
        assert_eq!(keys.len(), 100);
    }

    #[test]
    fn faults_follow_the_rates_and_pages_stay_valid_json() {
        let mut d = Dataset::new(20_000, 100, 1);
        d.malformed_rate = 0.1;
        d.missing_rate = 0.2;
        let poison = (0..d.records)
            .filter(|i| matches!(d.expected(*i), Expected::Poison { .. }))
            .count();
        assert!((1500..2500).contains(&poison), "{poison}");
        for c in 0..3 {
            let mut s = String::new();
            d.write_page(c, 1, &mut s);
            let v: Vec<serde_json::Value> = serde_json::from_str(&s).unwrap();
            assert_eq!(v.len(), 100);
        }
        let with_nulls = (0..1000)
            .filter(|i| d.entry_json(*i).contains("null"))
            .count();
        assert!(with_nulls > 0);
    }

    #[test]
    fn entries_at_100_lp_and_only_those_carry_a_mini_series() {
        let d = Dataset::new(5_000, 100, 9);
        let mut with = 0;
        for i in 0..d.records {
            let v: serde_json::Value = serde_json::from_str(&d.entry_json(i)).unwrap();
            let at_100 = v["leaguePoints"].as_u64() == Some(MINI_SERIES_LP);
            assert_eq!(v.get("miniSeries").is_some(), at_100, "{v}");
            if let Some(m) = v.get("miniSeries") {
                with += 1;
                let target = m["target"].as_u64().unwrap();
                let (w, l) = (m["wins"].as_u64().unwrap(), m["losses"].as_u64().unwrap());
                let progress = m["progress"].as_str().unwrap();
                assert!(w < target && l < target, "{m}");
                assert_eq!(progress.len() as u64, 2 * target - 1, "{m}");
                assert_eq!(progress.matches('W').count() as u64, w, "{m}");
                assert_eq!(progress.matches('L').count() as u64, l, "{m}");
            }
        }
        // leaguePoints is uniform on 0..=100: about 1 in 101.
        assert!((20..100).contains(&with), "{with}");
    }

    #[test]
    fn drift_shifts_league_points_after_n_pages() {
        let mut d = Dataset::new(28_000, 100, 3);
        d.drift_after_pages = Some(5);
        let lp = |i: u64| -> f64 {
            let v: serde_json::Value = serde_json::from_str(&d.entry_json(i)).unwrap();
            v["leaguePoints"].as_f64().unwrap()
        };
        let r = d.stream_range(0);
        let before: f64 = (r.start..r.start + 500).map(lp).sum::<f64>() / 500.0;
        let after: f64 = (r.start + 600..r.start + 1000).map(lp).sum::<f64>() / 400.0;
        assert!(!d.drifted(r.start + 499) && d.drifted(r.start + 500));
        assert!(after - before > 15.0, "{before} {after}");
    }
}
