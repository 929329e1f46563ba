//! Validation's cost per body at the edge: `schema::validate` over bodies like the ones the benchmarks
//! post (1 KB `installing` bodies as `deploy/bench/installing.lua` sends, each with its own ids, and
//! `failed` finals with a 600-byte log to mask), N times each; prints nanoseconds per body.
//! Used by `deploy/bench/validate.sh`, which runs it for this tree and for a baseline side by side.
//! Usage: cargo run --release -p schema --example validate [N, default 200000]

use std::hint::black_box;
use std::time::Instant;

use schema::{validate, Reception};

fn installing(i: usize) -> Vec<u8> {
    let id = format!("bench-{i}");
    let body = format!(
        r#"{{"random_id":"{id}","execution_id":"{id}","type":"lxc","nsapp":"jellyfin","status":"installing","ct_type":1,"disk_size":8,"core_count":2,"ram_size":2048,"os_type":"debian","os_version":"13","pve_version":"9.0.10","method":"default","cpu_vendor":"intel","cpu_model":"Intel Core i5-8500T CPU @ 2.10GHz","gpu_vendor":"intel","gpu_model":"Intel Corporation CoffeeLake-S GT2 [UHD Graphics 630]","gpu_passthrough":"igpu","ram_speed":"2667","repo_source":"ProxmoxVE","note":"PAD"}}"#
    );
    let pad = "x".repeat(1024usize.saturating_sub(body.len() - 3));
    body.replace("PAD", &pad).into_bytes()
}

fn failed(i: usize) -> Vec<u8> {
    let id = format!("bench-{i}");
    let log =
        "E: Unable to fetch some archives, maybe run apt-get update or try with --fix-missing?\\n"
            .repeat(7);
    format!(
        r#"{{"random_id":"{id}","execution_id":"{id}","type":"lxc","nsapp":"jellyfin","status":"failed","exit_code":100,"error":"{log}","error_category":"apt","install_duration":93,"repo_source":"ProxmoxVE"}}"#
    )
    .into_bytes()
}

fn measure(name: &str, bodies: &[Vec<u8>], n: usize) {
    for body in bodies.iter().take(1000) {
        validate(body, Reception::now()).expect("the benchmark's bodies are valid");
    }
    let started = Instant::now();
    for i in 0..n {
        black_box(validate(black_box(&bodies[i % bodies.len()]), Reception::now()).is_ok());
    }
    let ns = started.elapsed().as_nanos() as f64 / n as f64;
    println!("validate_{name}_ns_per_body {ns:.0}");
}

fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let installs: Vec<Vec<u8>> = (0..4096).map(installing).collect();
    let finals: Vec<Vec<u8>> = (0..4096).map(failed).collect();
    measure("installing", &installs, n);
    measure("failed", &finals, n);
}
