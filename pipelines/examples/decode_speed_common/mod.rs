//! The body of the `decode_speed` examples (one per global allocator).

use std::time::Instant;

use pipelines::bench::sample_event;
use pipelines::event::{decode, DecodeContext, TaskEvent};
use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};

/// Decodes the bench mix `N` times (first argument, default 500,000) on one
/// thread and prints the time per message; then, for scale, the parts any
/// decoder of this output pays: the content hash alone (SHA-256 of the
/// three in five messages that carry no id), one validating pass over the
/// bytes (serde_json into `IgnoredAny`: no tree, no allocation), and making
/// and dropping the decoded events (a clone of each: the same allocations).
/// Decoding minus their sum is what reading into a tree and moving fields
/// between dialects cost, the most a single-pass decoder could save.
pub fn run(allocator: &str) {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(500_000);
    let msgs: Vec<String> = (0..1000).map(|i| sample_event(i).1).collect();
    let start = Instant::now();
    let cpu_start = thread_cpu_secs();
    decode_all(&msgs, n);
    let cpu = thread_cpu_secs() - cpu_start;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "decode ({allocator}): {:.0} msgs/s ({:.3} µs/msg; thread CPU {:.3} µs/msg)",
        n as f64 / secs,
        secs * 1e6 / n as f64,
        cpu * 1e6 / n as f64
    );

    // The messages the decoder hashes: those without an id (i % 5 in 1..=3).
    let start = Instant::now();
    hash_alone(&msgs, n);
    let hash = start.elapsed().as_secs_f64();
    println!(
        "of which the content hash alone: {:.3} µs/msg of the mix (SHA extensions: {})",
        hash * 1e6 / n as f64,
        if std::is_x86_feature_detected!("sha") {
            "present"
        } else {
            "absent"
        }
    );
    let start = Instant::now();
    scan_alone(&msgs, n);
    let scan = start.elapsed().as_secs_f64();
    let events: Vec<TaskEvent> = msgs
        .iter()
        .map(|m| decode(m.as_bytes(), &context()).expect("sample events decode"))
        .collect();
    let start = Instant::now();
    build_alone(&events, n);
    let build = start.elapsed().as_secs_f64();
    let us = |s: f64| s * 1e6 / n as f64;
    println!(
        "about the floor of any decoder of this output: {:.3} µs/msg (a validating scan {:.3}, making and dropping the events {:.3}, the content hash {:.3})",
        us(scan + build + hash),
        us(scan),
        us(build),
        us(hash)
    );
}

fn context() -> DecodeContext<'static> {
    DecodeContext {
        topic: "task-events",
        kafka_timestamp_ms: Some(1_764_000_000_000),
    }
}

/// One validating pass over each message, building nothing.
#[inline(never)]
fn scan_alone(msgs: &[String], n: u64) {
    for i in 0..n {
        let m = msgs[(i % 1000) as usize].as_bytes();
        std::hint::black_box(serde_json::from_slice::<IgnoredAny>(m).expect("valid JSON"));
    }
}

/// The decoded events made and dropped again (cloned: the same allocations).
#[inline(never)]
fn build_alone(events: &[TaskEvent], n: u64) {
    for i in 0..n {
        std::hint::black_box(events[(i % 1000) as usize].clone());
    }
}

/// The measured loop (not inlined, so that `valgrind --tool=callgrind
/// --toggle-collect='*decode_all*'` counts it alone).
#[inline(never)]
fn decode_all(msgs: &[String], n: u64) {
    let ctx = context();
    for i in 0..n {
        let e = decode(msgs[(i % 1000) as usize].as_bytes(), &ctx).expect("sample events decode");
        std::hint::black_box(e);
    }
}

/// SHA-256 of the messages the decoder hashes: those without an id (`i % 5`
/// in 1..=3 in the bench mix).
#[inline(never)]
fn hash_alone(msgs: &[String], n: u64) {
    for i in 0..n {
        if (1..=3).contains(&(i % 5)) {
            std::hint::black_box(Sha256::digest(msgs[(i % 1000) as usize].as_bytes()));
        }
    }
}

/// This thread's CPU time: unlike the wall clock, it does not count the
/// time other processes on a busy machine take the core away.
fn thread_cpu_secs() -> f64 {
    // SAFETY: clock_gettime writes into the struct we own.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}
