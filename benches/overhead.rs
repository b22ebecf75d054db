//! Overheads as paired ratios: the forward of each adapter method over the base model, and a
//! `train_adapter` step over a full fine-tuning step.
//!
//! `forward.rs` and `train.rs` time each variant in its own criterion group, minutes apart; on a
//! shared machine the drift between groups (±10 %) is larger than the overheads asked about
//! (1–5 %). Here every round times the reference and each variant back to back (in a rotating
//! order), and the overhead is the median over rounds of `variant / reference` within a round,
//! with a distribution-free 95 % confidence interval for that median (order statistics of the
//! binomial). `lora merged` runs exactly the base model's operations and serves as the A/A
//! control: its interval shows the resolution of the measurement.
//!
//! ```text
//! [BURN_ADAPTERS_BENCH_DEVICE=flex|wgpu|tch|cuda] cargo bench [--features tch] --bench overhead
//! BURN_ADAPTERS_BENCH_ROUNDS=40 BURN_ADAPTERS_BENCH_SHAPES=minilm cargo bench --bench overhead
//! BURN_ADAPTERS_BENCH_PARTS=train cargo bench --bench overhead   # forward, train (default both)
//! BURN_ADAPTERS_BENCH_VARIANTS="seq_bn,lora merged" cargo bench --bench overhead   # a subset
//! BURN_ADAPTERS_BENCH_OUT=target/overhead.json cargo bench --bench overhead   # also as JSON
//! ```
//! `tools/bench_reference.py --paired` measures the Python reference the same way and
//! `tools/bench_compare.py --paired` puts both side by side.

mod common;

use std::hint::black_box;
use std::time::Instant;

use burn_adapters::models::bert::BertModel;
use common::{
    Shape, TRAIN_VARIANTS, TrainStep, VARIANTS, bench_device, device_with, forward_sum, input,
    shapes, with_variant,
};

/// Seconds `run` takes (it reads a result back, so the device has finished).
fn time(run: &mut impl FnMut() -> f32) -> f64 {
    let start = Instant::now();
    black_box(run());
    start.elapsed().as_secs_f64()
}

/// The median of `values` and a 95 % confidence interval for it: the order statistics at
/// ranks `n/2 ∓ 0.98·√n` (normal approximation of the binomial, conservative for n ≥ 10).
fn median_with_interval(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    let half_width = (0.98 * (n as f64).sqrt()).ceil() as usize;
    let lo = (n / 2).saturating_sub(half_width);
    let hi = (n / 2 + half_width).min(n - 1);
    (median, values[lo], values[hi])
}

/// A timed call (returning a scalar read from the device, so that the work is done).
type Run<'a> = Box<dyn FnMut() -> f32 + 'a>;

/// Times `runs` (the reference at `reference`) in `rounds` rounds after one warm-up call each,
/// prints a table of median times and paired ratios headed `title`, and returns the table as
/// JSON: `{"<title>/<variant>": {"median", "ratio", "lo", "hi"}}` (seconds; no ratio for the
/// reference).
fn paired(
    title: &str,
    rounds: usize,
    reference: usize,
    mut runs: Vec<(&str, Run<'_>)>,
) -> serde_json::Map<String, serde_json::Value> {
    for (_, run) in runs.iter_mut() {
        time(run); // warm-up: allocations, kernel selection
    }
    let mut times = vec![Vec::with_capacity(rounds); runs.len()];
    for round in 0..rounds {
        for k in 0..runs.len() {
            let v = (round + k) % runs.len();
            times[v].push(time(&mut runs[v].1));
        }
    }
    println!("\n{title}");
    println!(
        "| variant | median time | ratio to {} (95 % CI) |",
        runs[reference].0
    );
    println!("|---|---|---|");
    let mut table = serde_json::Map::new();
    for (v, (label, _)) in runs.iter().enumerate() {
        let (t, ..) = median_with_interval(times[v].clone());
        let key = format!("{title}/{label}");
        if v == reference {
            println!("| {label} | {:.1} ms | – |", t * 1e3);
            table.insert(key, serde_json::json!({ "median": t }));
            continue;
        }
        let ratios = times[v]
            .iter()
            .zip(&times[reference])
            .map(|(t, r)| t / r)
            .collect();
        let (ratio, lo, hi) = median_with_interval(ratios);
        println!(
            "| {label} | {:.1} ms | {ratio:.3}× ({lo:.3}–{hi:.3}) |",
            t * 1e3
        );
        table.insert(
            key,
            serde_json::json!({ "median": t, "ratio": ratio, "lo": lo, "hi": hi }),
        );
    }
    table
}

/// `BURN_ADAPTERS_BENCH_VARIANTS` (comma-separated labels; the reference always runs), or all.
fn wanted_variant(label: &str) -> bool {
    match std::env::var("BURN_ADAPTERS_BENCH_VARIANTS") {
        Ok(list) => list.split(',').any(|v| v.trim() == label),
        Err(_) => true,
    }
}

fn forward(rounds: usize, out: &mut serde_json::Map<String, serde_json::Value>) {
    let device = bench_device();
    println!("paired forward overhead, {rounds} rounds, device {device:?}");
    let variants: Vec<_> = VARIANTS
        .iter()
        .enumerate()
        .filter(|(i, (label, ..))| *i == 0 || wanted_variant(label))
        .map(|(_, variant)| variant)
        .collect();
    for Shape { name, config } in shapes() {
        device.seed(0);
        let base = config.init(&device).unwrap();
        let models: Vec<BertModel> = variants
            .iter()
            .map(|(_, spec, merged)| with_variant(&base, *spec, *merged))
            .collect();
        for batch in [8, 1] {
            let input = input(batch, 128, &device);
            let runs = variants
                .iter()
                .zip(&models)
                .map(|((label, ..), model)| {
                    let run: Run = Box::new(|| forward_sum(model, &input));
                    (*label, run)
                })
                .collect();
            out.extend(paired(
                &format!("forward {name} {batch}x128"),
                rounds,
                0,
                runs,
            ));
        }
    }
}

fn train(rounds: usize, out: &mut serde_json::Map<String, serde_json::Value>) {
    let device = device_with(true);
    println!("\npaired train step, {rounds} rounds, device {device:?}");
    for Shape { name, config } in shapes().into_iter().filter(|s| s.name == "minilm") {
        device.seed(0);
        let base = config.init(&device).unwrap();
        let runs: Vec<(&str, Run)> = TRAIN_VARIANTS
            .iter()
            .filter(|variant| **variant == "full fine-tuning" || wanted_variant(variant))
            .map(|variant| {
                let mut train = TrainStep::new(&base, variant, &device);
                let run: Run = Box::new(move || train.step());
                (*variant, run)
            })
            .collect();
        let full = runs.len() - 1;
        out.extend(paired(
            &format!("train step {name} 8x128"),
            rounds,
            full,
            runs,
        ));
    }
}

fn main() {
    let rounds: usize = std::env::var("BURN_ADAPTERS_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let parts =
        std::env::var("BURN_ADAPTERS_BENCH_PARTS").unwrap_or_else(|_| "forward,train".into());
    let wanted = |part: &str| parts.split(',').any(|p| p.trim() == part);
    let mut out = serde_json::Map::new();
    if wanted("forward") {
        forward(rounds, &mut out);
    }
    if wanted("train") {
        train(rounds, &mut out);
    }
    if let Ok(path) = std::env::var("BURN_ADAPTERS_BENCH_OUT") {
        let json = serde_json::to_string_pretty(&out).expect("a map of numbers");
        std::fs::write(&path, json).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}
