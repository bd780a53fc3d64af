//! Single-thread decode throughput over the benchmark's message mix:
//! `cargo run --release -p pipelines --example decode_speed [N]`.
//!
//! Uses mimalloc as the global allocator, as the production binary
//! (`workers/src/main.rs`) does; `--example decode_speed_system` measures the
//! same with the system allocator.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "decode_speed_common/mod.rs"]
mod decode_speed_common;

fn main() {
    decode_speed_common::run("mimalloc");
}
