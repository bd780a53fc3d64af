//! Single-thread decode throughput over the benchmark's message mix:
//! `cargo run --release -p pipelines --example decode_speed [N]`.

use std::time::Instant;

use pipelines::bench::sample_event;
use pipelines::event::{decode, DecodeContext};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500_000);
    let msgs: Vec<String> = (0..1000).map(|i| sample_event(i).1).collect();
    let ctx = DecodeContext {
        topic: "task-events",
        kafka_timestamp_ms: Some(1_764_000_000_000),
    };
    let start = Instant::now();
    for i in 0..n {
        let e = decode(msgs[(i % 1000) as usize].as_bytes(), &ctx).expect("sample events decode");
        std::hint::black_box(e);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:.0} msgs/s ({:.2} µs/msg)",
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
}
