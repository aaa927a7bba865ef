//! `etl-pipe profile` end to end: small generated files, figures checked against values
//! derived by hand, the `--json` shape, the HTML file, errors and exit codes.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn etl_pipe() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_etl-pipe"));
    // Keep the developer's environment out of the thresholds.
    for (k, _) in std::env::vars() {
        if k.starts_with("ETL__") || k == "ETL_CONFIG" {
            c.env_remove(k);
        }
    }
    c
}

fn run(args: &[&str]) -> Output {
    etl_pipe().arg("profile").args(args).output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Baseline: x = 0..999 (deciles of 100 values each), tier A/B/C at 50/30/20 %.
fn baseline_csv(dir: &Path) -> PathBuf {
    let mut s = String::from("x,tier\n");
    for i in 0..1000 {
        let tier = match i % 10 {
            0..=4 => "A",
            5..=7 => "B",
            _ => "C",
        };
        let _ = writeln!(s, "{},{tier}", (i * 7) % 1000);
    }
    write(dir, "base.csv", &s)
}

/// Current: x puts 5 % in each lower decile and 15 % in each upper one; tier unchanged;
/// z is missing in 25 of 100 rows.
fn current_csv(dir: &Path) -> PathBuf {
    let mut s = String::from("x,tier,z\n");
    let mut row = 0;
    for d in 0..10 {
        let n = if d < 5 { 5 } else { 15 };
        for i in 0..n {
            let tier = match row % 10 {
                0..=4 => "A",
                5..=7 => "B",
                _ => "C",
            };
            let z = if row % 4 == 0 {
                String::new()
            } else {
                format!("{}", (row * 37) % 11)
            };
            let _ = writeln!(s, "{},{tier},{z}", d * 100 + i);
            row += 1;
        }
    }
    write(dir, "cur.csv", &s)
}

fn field<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no field {name} in {report}"))
}

#[test]
fn csv_against_a_baseline_gives_hand_derived_figures_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let base = baseline_csv(dir.path());
    let cur = current_csv(dir.path());
    let out = run(&[
        cur.to_str().unwrap(),
        "--baseline",
        base.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = json(&out);
    assert_eq!(r["rows"], 100);
    assert_eq!(r["decision"], "FAIL");
    assert_eq!(r["baseline"]["rows"], 1000);
    // 5·(0.05−0.1)·ln 0.5 + 5·(0.15−0.1)·ln 1.5 = 0.274653…
    let psi = field(&r, "x")["psi"].as_f64().unwrap();
    let expected = -0.25 * 0.5f64.ln() + 0.25 * 1.5f64.ln();
    assert!((psi - expected).abs() < 1e-12, "{psi} vs {expected}");
    assert_eq!(field(&r, "x")["decision"], "FAIL");
    assert_eq!(field(&r, "tier")["psi"].as_f64().unwrap(), 0.0);
    assert_eq!(field(&r, "tier")["kind"], "categorical");
    let z = field(&r, "z");
    assert_eq!(z["missing"], 25);
    assert_eq!(z["missing_ratio"], 0.25);
    assert_eq!(z["psi"], serde_json::Value::Null);
    assert_eq!(z["psi_status"], "not_in_baseline");
    assert_eq!(z["decision"], "FAIL");
    let messages: Vec<&str> = r["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.contains(&"z: missing ratio 0.2500 >= 0.2 (FAIL)"),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("x: PSI 0.2747")),
        "{messages:?}"
    );
    // Shape: every field carries the same keys, VIF summary present, no NaN anywhere.
    for f in r["fields"].as_array().unwrap() {
        for key in [
            "name",
            "kind",
            "missing",
            "missing_ratio",
            "type_errors",
            "type_error_ratio",
            "mean",
            "std",
            "min",
            "max",
            "psi",
            "psi_status",
            "vif",
            "vif_status",
            "decision",
        ] {
            assert!(f.get(key).is_some(), "{key} missing in {f}");
        }
    }
    assert_eq!(r["vif"]["fields"], 2);
    assert_eq!(r["vif"]["rows_used"], 75);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("NaN"));
}

#[test]
fn table_and_field_list_and_per_field_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let base = baseline_csv(dir.path());
    let cur = current_csv(dir.path());
    let cfg = write(
        dir.path(),
        "q.toml",
        "[quality]\npsi_warn = 0.2\n[quality.fields.x]\npsi_fail = inf\n",
    );
    let out = etl_pipe()
        .args(["profile", "--config"])
        .arg(&cfg)
        .arg(&cur)
        .args(["--baseline"])
        .arg(&base)
        .args(["--fields", "x,tier"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // x's PSI 0.27 is only a WARN now (fail off for x, warn 0.2); z is not profiled.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("decision: WARN"), "{stdout}");
    assert!(stdout.contains("x: PSI 0.2747 >= 0.2 (WARN)"), "{stdout}");
    assert!(!stdout.contains("\nz "), "{stdout}");
    let out = etl_pipe()
        .args(["profile", "--strict", "--config"])
        .arg(&cfg)
        .arg(&cur)
        .args(["--baseline"])
        .arg(&base)
        .args(["--fields", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn jsonl_without_baseline_reports_vif_and_no_psi() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = String::new();
    for i in 0..200 {
        let a = ((i * 31) % 97) as f64;
        let c = ((i * 17) % 89) as f64;
        // b = 2a + 1 exactly: perfectly collinear with a.
        let _ = writeln!(
            s,
            r#"{{"a": {a}, "b": {}, "c": {c}, "name": "n{i}", "flag": {}}}"#,
            2.0 * a + 1.0,
            i % 2 == 0
        );
    }
    let f = write(dir.path(), "d.jsonl", &s);
    let out = run(&[f.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let r = json(&out);
    assert_eq!(r["baseline"], serde_json::Value::Null);
    assert_eq!(field(&r, "a")["vif"], "inf");
    assert_eq!(field(&r, "b")["vif"], "inf");
    assert_eq!(field(&r, "b")["vif_status"], "infinite");
    assert!(field(&r, "c")["vif"].as_f64().unwrap() < 1.1);
    assert_eq!(field(&r, "flag")["kind"], "categorical");
    assert_eq!(field(&r, "name")["psi_status"], "no_baseline");
    assert_eq!(field(&r, "a")["psi"], serde_json::Value::Null);
    // Too few rows for the VIF: explicit, not NaN.
    let f = write(
        dir.path(),
        "tiny.jsonl",
        "{\"a\": 1, \"b\": 2, \"c\": 3}\n{\"a\": 2, \"b\": 1, \"c\": 0}\n",
    );
    let out = run(&[f.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let r = json(&out);
    assert_eq!(r["vif"]["status"], "not_enough_data");
    assert_eq!(r["vif"]["needed"], 4);
    assert_eq!(field(&r, "a")["vif"], serde_json::Value::Null);
}

#[test]
fn html_report_has_the_bars() {
    let dir = tempfile::tempdir().unwrap();
    let base = baseline_csv(dir.path());
    let cur = current_csv(dir.path());
    let html = dir.path().join("report.html");
    let out = run(&[
        cur.to_str().unwrap(),
        "--baseline",
        base.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let h = std::fs::read_to_string(&html).unwrap();
    assert!(h.starts_with("<!DOCTYPE html>"));
    for id in ["id=\"psi\"", "id=\"vif\"", "id=\"missing\""] {
        assert!(h.contains(id), "{id}");
    }
    // PSI bars for x, tier (z has no baseline), VIF bars for x and z, missing bars for all 3.
    assert_eq!(h.matches("class=\"bar\"").count(), 2 + 2 + 3, "{h}");
    assert!(h.contains("x = 0.2747"), "{h}");
    assert!(h.contains("not in baseline"));
    assert!(!h.contains("<script") && !h.contains("http://") && !h.contains("https://"));
}

#[test]
fn saved_baseline_gives_the_same_psi_as_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let base = baseline_csv(dir.path());
    let cur = current_csv(dir.path());
    let saved = dir.path().join("base.baseline.json");
    let out = run(&[
        base.to_str().unwrap(),
        "--save-baseline",
        saved.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    assert_eq!(b["format"], "etl-pipe-baseline");
    let from_data = json(&run(&[
        cur.to_str().unwrap(),
        "--baseline",
        base.to_str().unwrap(),
        "--json",
    ]));
    let from_saved = json(&run(&[
        cur.to_str().unwrap(),
        "--baseline",
        saved.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(from_saved["baseline"]["from"], "saved");
    assert_eq!(from_data["fields"], from_saved["fields"]);
}

#[test]
fn errors_are_clear_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let err = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();

    let out = run(&[dir.path().join("missing.csv").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err(&out).contains("cannot read") && err(&out).contains("missing.csv"),
        "{}",
        err(&out)
    );

    let f = write(dir.path(), "bad.csv", "a,b\n1,2\n3,4\n5,6,7\n");
    let out = run(&[f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err(&out).contains("bad.csv line 4: row has 3 fields, the header has 2"),
        "{}",
        err(&out)
    );

    let f = write(dir.path(), "bad.jsonl", "{\"a\": 1}\n{\"a\": \n");
    let out = run(&[f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("bad.jsonl line 2"), "{}", err(&out));

    let f = write(dir.path(), "ok.csv", "a,b\n1,2\n");
    let out = run(&[f.to_str().unwrap(), "--fields", "a,nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err(&out).contains("unknown field `nope`") && err(&out).contains("a, b"),
        "{}",
        err(&out)
    );

    let cfg = write(dir.path(), "bad.toml", "[quality]\nvif_warn = 20.0\n");
    let out = etl_pipe()
        .args(["profile", "--config"])
        .arg(&cfg)
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(err(&out).contains("quality.vif_warn"), "{}", err(&out));
}

#[test]
fn a_baseline_field_missing_from_the_file_fails_as_all_missing() {
    let dir = tempfile::tempdir().unwrap();
    let base = write(dir.path(), "b.csv", "a,gone\n1,x\n2,y\n3,x\n");
    let cur = write(
        dir.path(),
        "c.jsonl",
        "{\"a\": 1}\n{\"a\": 2}\n{\"a\": 3}\n",
    );
    let out = run(&[
        cur.to_str().unwrap(),
        "--baseline",
        base.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let r = json(&out);
    assert_eq!(field(&r, "gone")["missing_ratio"], 1.0);
    assert_eq!(field(&r, "gone")["kind"], "categorical");
    assert_eq!(field(&r, "gone")["psi_status"], "no_data");
    assert_eq!(field(&r, "a")["psi"], 0.0);
    assert!(
        r["notes"].to_string().contains("`gone` is in the baseline"),
        "{r}"
    );
    // --fields may name baseline fields; unknown names list both files' fields.
    let out = run(&[
        cur.to_str().unwrap(),
        "--baseline",
        base.to_str().unwrap(),
        "--fields",
        "a,nope",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("and the baseline are: a, gone"), "{e}");
}

/// Nested JSON (issue 20): fields are paths — `series.wins` through nested objects,
/// `len(tags)` for arrays — in the report, in `--fields` and in PSI against a baseline file of
/// the same shape; a null parent makes its leaves missing.
#[test]
fn nested_jsonl_is_profiled_by_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let line = |i: usize, shift: usize| {
        let series = if i % 10 == 0 {
            "null".to_string()
        } else {
            format!(
                r#"{{"wins": {}, "detail": {{"tier": "{}"}}}}"#,
                i % 5 + shift,
                ["GOLD", "SILVER"][i % 2]
            )
        };
        format!(
            r#"{{"id": {i}, "series": {series}, "tags": [{}]}}"#,
            vec!["1"; i % 3].join(",")
        )
    };
    let text = |shift| (0..1000).map(|i| line(i, shift) + "\n").collect::<String>();
    let base = write(dir.path(), "base.jsonl", &text(0));
    let same = write(dir.path(), "same.jsonl", &text(0));
    let drifted = write(dir.path(), "drifted.jsonl", &text(2));
    let args = |f: &PathBuf| {
        vec![
            f.to_str().unwrap().to_string(),
            "--baseline".into(),
            base.to_str().unwrap().into(),
            "--json".into(),
        ]
    };
    let out = run(&args(&same).iter().map(String::as_str).collect::<Vec<_>>());
    let r = json(&out);
    let names: Vec<&str> = r["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["id", "len(tags)", "series.wins", "series.detail.tier"]
    );
    assert_eq!(field(&r, "series.wins")["kind"], "numeric");
    assert_eq!(field(&r, "series.detail.tier")["kind"], "categorical");
    assert_eq!(field(&r, "series.wins")["missing_ratio"], 0.1);
    assert_eq!(field(&r, "len(tags)")["mean"], 0.999);
    assert_eq!(field(&r, "series.wins")["psi"], 0.0);
    // A drift of the nested leaf alone is its PSI, named by its path.
    let out = run(&args(&drifted)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let r = json(&out);
    assert!(
        field(&r, "series.wins")["psi"].as_f64().unwrap() > 0.25,
        "{r}"
    );
    assert_eq!(field(&r, "series.detail.tier")["psi"], 0.0);
    assert!(r["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["field"] == "series.wins" && x["metric"] == "psi"));
    // --fields takes the paths; an unknown path is an error naming the file's paths.
    let f = drifted.to_str().unwrap();
    let r = json(&run(&[f, "--fields", "len(tags),series.wins", "--json"]));
    assert_eq!(r["fields"].as_array().unwrap().len(), 2);
    let out = run(&[f, "--fields", "series.nope"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("series.nope") && err.contains("series.wins"),
        "{err}"
    );
}
