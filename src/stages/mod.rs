//! The pipeline stages. Each is a module with one entry point, `run(config, shutdown)`.
pub mod extract;
