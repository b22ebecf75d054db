//! Forward overhead of each adapter method over the base model, measured as paired ratios.
//!
//! `forward.rs` times each variant in its own criterion group, minutes apart; on a shared machine
//! the drift between groups (±10 %) is larger than the overheads asked about (1–5 %). Here every
//! round times the base model and each variant back to back (in a rotating order), and the
//! overhead is the median over rounds of `variant / base` within a round, with a distribution-free
//! 95 % confidence interval for that median (order statistics of the binomial). `lora merged`
//! runs exactly the base model's operations and serves as the A/A control: its interval shows
//! the resolution of the measurement.
//!
//! ```text
//! [BURN_ADAPTERS_BENCH_DEVICE=flex|wgpu|tch|cuda] cargo bench [--features tch] --bench overhead
//! BURN_ADAPTERS_BENCH_ROUNDS=40 BURN_ADAPTERS_BENCH_SHAPES=minilm cargo bench --bench overhead
//! ```

mod common;

use std::hint::black_box;
use std::time::Instant;

use burn_adapters::models::bert::{BertInput, BertModel};
use common::{Shape, VARIANTS, bench_device, forward_sum, input, shapes, with_variant};

/// Seconds for one forward pass, read back to the host so the device has finished.
fn time(model: &BertModel, input: &BertInput) -> f64 {
    let start = Instant::now();
    black_box(forward_sum(model, input));
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

fn main() {
    let device = bench_device();
    let rounds: usize = std::env::var("BURN_ADAPTERS_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    println!("paired forward overhead, {rounds} rounds, device {device:?}");
    for shape in shapes() {
        let Shape { name, config } = &shape;
        device.seed(0);
        let base = BertModel::new(config, &device);
        let models: Vec<BertModel> = VARIANTS
            .iter()
            .map(|(_, spec, merged)| with_variant(&base, *spec, *merged))
            .collect();
        for batch in [8, 1] {
            let input = input(batch, 128, &device);
            for model in &models {
                time(model, &input); // warm-up: allocations, kernel selection
            }
            let mut times = vec![Vec::with_capacity(rounds); models.len()];
            for round in 0..rounds {
                for k in 0..models.len() {
                    let v = (round + k) % models.len();
                    times[v].push(time(&models[v], &input));
                }
            }
            println!("\n{name} {batch}x128");
            println!("| variant | median time | overhead vs base (95 % CI) |");
            println!("|---|---|---|");
            for (v, (label, ..)) in VARIANTS.iter().enumerate() {
                let (t, ..) = median_with_interval(times[v].clone());
                if v == 0 {
                    println!("| {label} | {:.1} ms | – |", t * 1e3);
                    continue;
                }
                let ratios = times[v].iter().zip(&times[0]).map(|(t, b)| t / b).collect();
                let (ratio, lo, hi) = median_with_interval(ratios);
                println!(
                    "| {label} | {:.1} ms | {ratio:.3}× ({lo:.3}–{hi:.3}) |",
                    t * 1e3
                );
            }
        }
    }
}
