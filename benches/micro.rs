//! Micro benches on the hot paths, with a small built-in timer (stable Rust has no bench
//! harness): request head parsing, index path computation, index line (de)serialization,
//! and publish framing. `cargo bench --bench micro`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use palletizer::http::request;
use palletizer::registry::testing::index_path;
use palletizer::registry::{CrateName, IndexEntry, PublishMetadata};

/// Runs `f` repeatedly for about `budget` and prints ns per call (median of 5 rounds).
fn bench(name: &str, mut f: impl FnMut()) {
    let budget = Duration::from_millis(300);
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        if t.elapsed() > budget / 10 {
            break;
        }
        iters *= 2;
    }
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    rounds.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{name:<40} {:>10.1} ns/iter", rounds[2]);
}

const CARGO_HEAD: &[u8] = b"GET /index/ba/r-/bar-baz HTTP/1.1\r\nHost: 127.0.0.1:8871\r\n\
User-Agent: cargo/1.95.0 (f2d3ce0bd 2026-03-21)\r\nAccept-Encoding: deflate, gzip\r\n\
Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAQAAAAIAAAAA\r\n\
cargo-protocol: version=1\r\naccept: text/plain\r\nif-none-match: \"1a2b-2f0-6b0742a4560066053\"\r\n\r\n";

const META: &str = r#"{"name":"rich","vers":"0.2.0","deps":[
 {"optional":true,"default_features":true,"name":"ab","features":[],"version_req":"^1","target":null,"kind":"normal","explicit_name_in_toml":"abdep"},
 {"optional":false,"default_features":false,"name":"leaf","features":["fast"],"version_req":"^0.1","target":null,"kind":"normal"},
 {"optional":false,"default_features":true,"name":"tgt","features":[],"version_req":"^0.3","target":"cfg(unix)","kind":"normal"},
 {"optional":false,"default_features":true,"name":"serde","features":["derive"],"version_req":"^1","target":null,"kind":"dev","registry":"https://github.com/rust-lang/crates.io-index"}],
 "features":{"extra":["dep:abdep"],"weak":["abdep?/x"]},"authors":[],"description":"A crate","documentation":null,
 "homepage":null,"readme":null,"readme_file":null,"keywords":["a","b"],"categories":[],"license":"MIT",
 "license_file":null,"repository":null,"badges":{},"links":null,"rust_version":"1.70"}"#;

fn main() {
    bench("request::parse (cargo index request)", || {
        black_box(request::parse(black_box(CARGO_HEAD), 16 * 1024).unwrap());
    });
    let name = CrateName::parse("bar-baz").unwrap();
    bench("index::index_path", || {
        black_box(index_path(black_box(&name)));
    });
    let meta: PublishMetadata = serde_json::from_str(META).unwrap();
    let entry = IndexEntry::from_publish(
        &meta,
        &"ab".repeat(32),
        "2026-01-01T00:00:00Z".into(),
        |_| false,
    );
    let line = entry.to_line();
    bench("IndexEntry::from_publish", || {
        black_box(IndexEntry::from_publish(&meta, "00", String::new(), |_| {
            false
        }));
    });
    bench("IndexEntry::to_line", || {
        black_box(black_box(&entry).to_line());
    });
    bench("index line parse (serde_json)", || {
        black_box(serde_json::from_str::<IndexEntry>(black_box(&line)).unwrap());
    });
    let mut body = Vec::new();
    body.extend_from_slice(&(META.len() as u32).to_le_bytes());
    body.extend_from_slice(META.as_bytes());
    body.extend_from_slice(&4u32.to_le_bytes());
    body.extend_from_slice(b"\x1f\x8b\x08\x00");
    bench("publish framing + metadata JSON", || {
        let b = black_box(&body[..]);
        let n = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
        let m: PublishMetadata = serde_json::from_slice(&b[4..4 + n]).unwrap();
        let c = u32::from_le_bytes(b[4 + n..8 + n].try_into().unwrap());
        black_box((m, c));
    });
}
