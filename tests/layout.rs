//! The layering the README's "Layout" section promises, checked on the source: the pipeline
//! (settings, codec, kafka, quality, observability, stages) never imports the whole config,
//! the operations, the CLI or the tooling. Test code (`#[cfg(test)]` modules, `tests.rs`) may.
use std::path::{Path, PathBuf};

const PIPELINE: &[&str] = &[
    "src/settings",
    "src/codec",
    "src/kafka",
    "src/quality",
    "src/observability",
    "src/stages",
    "src/record.rs",
    "src/retry.rs",
    "src/shutdown.rs",
];
const FORBIDDEN: &[&str] = &[
    "crate::config",
    "crate::ops",
    "crate::tooling",
    "crate::cli",
];

fn rust_files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            rust_files(&e.unwrap().path(), out);
        }
    } else if p.extension().is_some_and(|x| x == "rs") && p.file_name().unwrap() != "tests.rs" {
        out.push(p.to_path_buf());
    }
}

#[test]
fn the_pipeline_imports_no_config_assembly_operations_or_tooling() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for p in PIPELINE {
        rust_files(&root.join(p), &mut files);
    }
    assert!(files.len() > 40, "found only {} files", files.len());
    let mut offences = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (i, line) in code.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for bad in FORBIDDEN {
                if line.contains(bad) {
                    offences.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "layering broken:\n{}",
        offences.join("\n")
    );
}

#[test]
fn no_source_file_is_a_room_that_does_too_much() {
    // ~600 lines per file, tests and generated tables excepted.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut big = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let n = code.lines().count();
        if n > 650 {
            big.push(format!("{} ({n} lines before its tests)", f.display()));
        }
    }
    assert!(big.is_empty(), "files over ~600 lines:\n{}", big.join("\n"));
}
