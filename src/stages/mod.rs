//! The pipeline stages. Each is a module with one entry point, `run(config, shutdown)`.
pub mod extract;
pub mod redrive;
pub mod replay;
pub mod status;
