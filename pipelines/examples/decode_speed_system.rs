//! `decode_speed` with the system allocator instead of mimalloc:
//! `cargo run --release -p pipelines --example decode_speed_system [N]`.

#[path = "decode_speed_common/mod.rs"]
mod decode_speed_common;

fn main() {
    decode_speed_common::run("system allocator");
}
