//! Tooling around the pipeline: the sample API (`etl-pipe sample-api`), the local runner behind
//! `etl-pipe demo` / `bench-e2e` and the tests, and the bench commands (`bench-sink`,
//! `bench-extract`, `bench-gate`). Tooling imports the pipeline; nothing in the pipeline imports tooling
//! (checked by `tests/layout.rs`).
pub mod bench_extract;
pub mod bench_gate;
pub mod bench_sink;
pub mod bench_stages;
pub mod local;
pub mod sample_api;
