//! Helpers shared by the binary's integration tests.

use std::process::Command;

/// The `taskstream` binary, without the developer's environment: tests set
/// what they need.
pub fn taskstream() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_taskstream"));
    for var in [
        "TASKSTREAM_CONFIG",
        "KAFKA_BOOTSTRAP_SERVERS",
        "REDIS_URL",
        "SMTP_URL",
        "DATABASE_URL",
        "TASKSTREAM_METRICS_ADDR",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    c
}
