//! Tests of the trailing window: counts, verdicts and the PSI line rule.
use super::*;
use crate::quality::BaselineBuilder;
use crate::record::{Record, Value};

fn rec(x: i32, name: Option<&str>) -> Record {
    let mut r = Record::new();
    r.set("x", Value::Int(x));
    r.set(
        "name",
        name.map_or(Value::Null, |n| Value::String(n.into())),
    );
    r
}

/// The next value of a small deterministic generator (the tests' streams).
fn lcg(x: u64) -> u64 {
    x.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
}

fn specs() -> Vec<FieldSpec> {
    vec![
        FieldSpec::new("x", FieldKind::Numeric),
        FieldSpec::new("name", FieldKind::Categorical),
    ]
}

/// A baseline of 500 rows: numbers 0..97 and the categories a, b, c in turn.
fn stable_baseline() -> Baseline {
    let mut b = BaselineBuilder::new(specs(), &Default::default());
    for i in 0..500 {
        b.push(&rec(i % 97, Some(["a", "b", "c"][(i % 3) as usize])));
    }
    b.build()
}

#[test]
fn figures_depend_on_the_last_rows_only_and_match_a_fresh_window() {
    let cfg = QualityConfig::default();
    let mut b = BaselineBuilder::new(specs(), &cfg);
    for i in 0..1000 {
        b.push(&rec(i % 100, Some(["a", "b"][i as usize % 2])));
    }
    let baseline = b.build();
    // One window has seen a long history, the other only the last 50 rows.
    let mut long = Trailing::new(specs(), 50, Some(&baseline));
    let mut short = Trailing::new(specs(), 50, Some(&baseline));
    let row = |i: i32| rec(i % 150, (i % 7 != 0).then_some(["a", "c"][i as usize % 2]));
    for i in 0..500 {
        long.push(i as i64, &row(i));
    }
    for i in 450..500 {
        short.push(i as i64, &row(i));
    }
    assert_eq!(long.tags(), Some((450, 499)));
    assert_eq!(long.verdict(&cfg), short.verdict(&cfg));
    let fresh = long.stats().report(&cfg);
    // The refilled accumulators give the fresh window's report, again after more rows.
    assert_eq!(
        serde_json::to_value(long.report(&cfg)).unwrap(),
        serde_json::to_value(&fresh).unwrap()
    );
    for i in 0..2 {
        assert_eq!(long.psi(i, cfg.epsilon), fresh.fields[i].psi, "field {i}");
    }
    assert_eq!(fresh.rows, 50);
    let mut again = long.clone();
    for i in 500..530 {
        again.push(i as i64, &row(i));
    }
    assert_eq!(
        serde_json::to_value(again.report(&cfg)).unwrap(),
        serde_json::to_value(again.stats().report(&cfg)).unwrap()
    );
    // A baseline set afterwards counts the held rows again.
    let mut late = Trailing::new(specs(), 50, None);
    for i in 450..500 {
        late.push(i as i64, &row(i));
    }
    assert_eq!(late.psi(0, cfg.epsilon), None);
    late.set_baseline(Some(&baseline));
    assert_eq!(late.verdict(&cfg), short.verdict(&cfg));
}

#[test]
fn missing_values_and_drift_fail_and_leave_with_their_rows() {
    let cfg = QualityConfig::default();
    let mut b = BaselineBuilder::new(specs(), &cfg);
    for i in 0..1000 {
        b.push(&rec(i % 100, Some("a")));
    }
    let baseline = b.build();
    let mut t = Trailing::new(specs(), 100, Some(&baseline));
    for i in 0..100 {
        t.push(i, &rec(i as i32 % 100, Some("a")));
    }
    assert_eq!(t.verdict(&cfg).decision, Decision::Pass);
    for i in 0..30 {
        t.push(100 + i, &rec(500, None));
    }
    let v = t.verdict(&cfg);
    assert_eq!(v.decision, Decision::Fail);
    assert!(v.reasons.iter().any(|r| r.metric == Metric::MissingRatio));
    assert!(v.reasons.iter().any(|r| r.metric == Metric::Psi));
    for i in 0..100 {
        t.push(200 + i, &rec(i as i32 % 100, Some("a")));
    }
    assert_eq!(t.verdict(&cfg).decision, Decision::Pass);
}

#[test]
fn psi_from_looked_up_logarithms_equals_psi_computed_afresh() {
    use crate::quality::psi::{proportions, psi, psi_of_counts, Expected, IntLogs};
    let baseline = stable_baseline();
    let mut t = Trailing::new(specs(), 200, Some(&baseline));
    let mut x: u64 = 7;
    for i in 0..3000 {
        // A drifting, uneven stream: bins fill and empty at different rates.
        x = lcg(x);
        let v = ((x >> 33) % 97) as i32 + if i > 1500 { 40 } else { 0 };
        let name = ["a", "b", "c", "d", ""][((x >> 20) % 5) as usize];
        t.push(i, &rec(v, (!name.is_empty()).then_some(name)));
        for f in 0..2 {
            let c = &t.counts[f];
            // Bit for bit what a block report computes (logarithms taken one by one) ...
            let fresh = psi_of_counts(
                &Expected::new(&c.expected, 1e-4),
                &c.buckets,
                &IntLogs::default(),
            );
            let got = t.psi(f, 1e-4);
            assert_eq!(
                got.map(f64::to_bits),
                fresh.map(f64::to_bits),
                "row {i}, field {f}"
            );
            // ... and the textbook formula's value up to rounding.
            let textbook = proportions(&c.buckets).map(|a| psi(&c.expected, &a, 1e-4));
            let (got, textbook) = (got.unwrap(), textbook.unwrap());
            assert!(
                (got - textbook).abs() <= 1e-12 * textbook.abs().max(1.0),
                "row {i}, field {f}: {got} vs {textbook}"
            );
        }
    }
}

#[test]
fn the_tail_counts_as_a_window_of_its_own_size_would() {
    let baseline = stable_baseline();
    let cfg = QualityConfig::default();
    let mut long = Trailing::new(specs(), 300, None).with_tail(120);
    let mut short = Trailing::new(specs(), 120, None);
    let mut x: u64 = 11;
    for i in 0..2000 {
        if i == 150 {
            // The baseline arrives mid-stream: both count their rows again.
            long.set_baseline(Some(&baseline));
            short.set_baseline(Some(&baseline));
        }
        x = lcg(x);
        let v = ((x >> 33) % 97) as i32 + if (800..1100).contains(&i) { 50 } else { 0 };
        let name = ["a", "b", "c", "d"][((x >> 20) % 4) as usize];
        let r = if x % 13 == 0 {
            rec(v, None)
        } else {
            rec(v, Some(name))
        };
        long.push(i, &r);
        short.push(i, &r);
        let tail = long.tail_verdict(&cfg);
        if long.len() < 120 {
            assert!(tail.is_none(), "row {i}");
        } else {
            assert_eq!(tail, Some(short.verdict(&cfg)), "row {i}");
        }
    }
}

#[test]
fn psi_lines_from_gives_the_verdict_with_the_unsound_psi_reasons_dropped() {
    use crate::quality::psi::psi_noise_rows;
    let baseline = stable_baseline();
    let cfg = QualityConfig::default();
    let rule = |line: f64| psi_noise_rows(cfg.bins, line);
    // What the score stage did before: judge every line, then drop the reasons of PSI
    // lines the window is too small for.
    let dropped = |v: TrailingVerdict, rows: usize| {
        let reasons: Vec<Reason> = v
            .reasons
            .into_iter()
            .filter(|r| r.metric != Metric::Psi || rule(r.threshold) <= rows)
            .collect();
        TrailingVerdict {
            decision: super::super::decision::worst(&reasons),
            reasons,
        }
    };
    let (n, m) = (1000, 184);
    let mut all = Trailing::new(specs(), n, Some(&baseline))
        .with_tail(m)
        .judged_by(&cfg);
    let mut sound = all.clone().psi_lines_from(&cfg, rule);
    let mut x: u64 = 5;
    let (mut psi_dropped, mut psi_kept) = (0, 0);
    for i in 0..6000 {
        x = lcg(x);
        // Undrifted, then a mild and a strong shift: PSI around both lines.
        let shift = [0, 8, 40][(i / 2000) as usize];
        let v = ((x >> 33) % 97) as i32 + shift;
        let name = ["a", "b", "c", "d"][((x >> 20) % 4) as usize];
        all.push(i, &rec(v, Some(name)));
        sound.push(i, &rec(v, Some(name)));
        let (whole, short) = (all.verdict(&cfg), all.tail_verdict(&cfg));
        let psi =
            |v: &TrailingVerdict| v.reasons.iter().filter(|r| r.metric == Metric::Psi).count();
        let before = whole.reasons.len() + short.as_ref().map_or(0, |s| s.reasons.len());
        let want = dropped(whole, all.len());
        let want_short = short.map(|s| dropped(s, m));
        let after = want.reasons.len() + want_short.as_ref().map_or(0, |s| s.reasons.len());
        psi_dropped += before - after;
        psi_kept += psi(&want) + want_short.as_ref().map_or(0, psi);
        assert_eq!(sound.verdict(&cfg), want, "row {i}");
        assert_eq!(sound.tail_verdict(&cfg), want_short, "row {i}");
    }
    // The stream exercises both: PSI reasons the rule drops and ones it keeps.
    assert!(psi_dropped > 300, "{psi_dropped}");
    assert!(psi_kept > 300, "{psi_kept} kept, {psi_dropped} dropped");
}

#[test]
fn memoised_reasons_give_the_verdicts_judged_afresh() {
    use crate::quality::psi::psi_noise_rows;
    let baseline = stable_baseline();
    let cfg = QualityConfig {
        missing_warn: 0.05,
        missing_fail: 0.15,
        ..QualityConfig::default()
    };
    let mut t = Trailing::new(specs(), 400, Some(&baseline))
        .with_tail(184)
        .judged_by(&cfg)
        .psi_lines_from(&cfg, |line| psi_noise_rows(cfg.bins, line));
    let mut x: u64 = 3;
    let (mut reused, mut judged, mut reasons) = (0, 0, 0);
    for i in 0..6000 {
        x = lcg(x);
        // Shifts, bursts of missing names and of type errors: reasons come and go.
        let v = ((x >> 33) % 97) as i32 + [0, 8, 40, 0][(i / 1500) as usize];
        let mut r = rec(v, Some(["a", "b", "c", "d"][((x >> 20) % 4) as usize]));
        if (2000..2600).contains(&i) && x % 5 == 0 {
            r.set("name", Value::Null);
        }
        if (4000..4300).contains(&i) && x % 7 == 0 {
            r.set("x", Value::String("n/a".into()));
        }
        t.push(i, &r);
        let kept = t
            .memo
            .borrow()
            .iter()
            .flat_map(|m| &m.fields)
            .filter(|f| f.is_some())
            .count();
        reused += kept;
        judged += 2 * specs().len() - kept;
        let mut afresh = t.clone();
        afresh.memo.get_mut().iter_mut().for_each(Memo::clear);
        let (v, tail) = (t.verdict(&cfg), t.tail_verdict(&cfg));
        reasons += v.reasons.len() + tail.as_ref().map_or(0, |s| s.reasons.len());
        assert_eq!(v, afresh.verdict(&cfg), "row {i}");
        assert_eq!(tail, afresh.tail_verdict(&cfg), "row {i}");
    }
    // Both paths ran: fields judged again and fields taken from the memo, with reasons.
    assert!(
        reused > 3000 && judged > 3000,
        "{reused} reused, {judged} judged"
    );
    assert!(reasons > 1000, "{reasons}");
}
