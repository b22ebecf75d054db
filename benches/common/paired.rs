//! Paired timing: every round runs the reference and each variant back to back, and a variant's
//! cost is the median over rounds of its time over the reference's in the same round.

use std::hint::black_box;
use std::time::Instant;

/// Seconds `run` takes (it reads a result back, so the device has finished).
pub fn time(run: &mut impl FnMut() -> f32) -> f64 {
    let start = Instant::now();
    black_box(run());
    start.elapsed().as_secs_f64()
}

/// The median of `values` and a 95 % confidence interval for it: the order statistics at
/// ranks `n/2 ∓ 0.98·√n` (normal approximation of the binomial, conservative for n ≥ 10).
pub fn median_with_interval(mut values: Vec<f64>) -> (f64, f64, f64) {
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
pub type Run<'a> = Box<dyn FnMut() -> f32 + 'a>;

/// Times `runs` (the reference at `reference`) in `rounds` rounds after one warm-up call each,
/// prints a table of median times and paired ratios headed `title`, and returns the table as
/// JSON: `{"<title>/<variant>": {"median", "ratio", "lo", "hi"}}` (seconds; no ratio for the
/// reference).
pub fn paired(
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
