//! The pipeline stages. Each is a module with one entry point, `run(config, shutdown)`.
pub mod clean;
pub mod extract;
pub mod redrive;
pub mod replay;
pub mod replay_mysql;
pub mod score;
pub mod sinks;
pub mod status;
