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
//! BURN_ADAPTERS_BENCH_PARTS=train cargo bench --bench overhead   # forward, train, drop,
//!                                                                 # methods (default forward,train)
//! BURN_ADAPTERS_BENCH_VARIANTS="seq_bn,lora merged" cargo bench --bench overhead   # a subset
//! BURN_ADAPTERS_BENCH_OUT=target/overhead.json cargo bench --bench overhead   # also as JSON
//! ```
//! `tools/bench_reference.py --paired` measures the Python reference the same way and
//! `tools/bench_compare.py --paired` puts both side by side.

mod common;

use burn_adapters::AdapterModel;
use burn_adapters::models::bert::{BertInput, BertModel};
use common::paired::{Run, paired};
use common::{
    METHODS, Shape, TRAIN_VARIANTS, TrainStep, VARIANTS, bench_device, device_with, forward_sum,
    input, shapes, with_variant,
};

/// `BURN_ADAPTERS_BENCH_VARIANTS` (comma-separated labels; the reference always runs), or all.
fn wanted_variant(label: &str) -> bool {
    match std::env::var("BURN_ADAPTERS_BENCH_VARIANTS") {
        Ok(list) => list.split(',').any(|v| v.trim() == label),
        Err(_) => true,
    }
}

/// A forward variant: (label, config, merged).
type Variant = (&'static str, Option<&'static str>, bool);

/// The wanted entries of a variant table (the first, the reference, always).
fn wanted(table: &'static [Variant]) -> Vec<&'static Variant> {
    table
        .iter()
        .enumerate()
        .filter(|(i, (label, ..))| *i == 0 || wanted_variant(label))
        .map(|(_, variant)| variant)
        .collect()
}

/// The paired forwards of `models` (one per variant) on `input`.
fn paired_forwards(
    title: &str,
    rounds: usize,
    variants: &[&Variant],
    models: &[BertModel],
    input: &BertInput,
) -> serde_json::Map<String, serde_json::Value> {
    let runs = variants
        .iter()
        .zip(models)
        .map(|((label, ..), model)| {
            let run: Run = Box::new(|| forward_sum(model, input));
            (*label, run)
        })
        .collect();
    paired(title, rounds, 0, runs)
}

/// `base` with each variant's adapter.
fn with_variants(base: &BertModel, variants: &[&Variant]) -> Vec<BertModel> {
    variants
        .iter()
        .map(|(_, spec, merged)| with_variant(base, *spec, *merged))
        .collect()
}

fn forward(rounds: usize, out: &mut serde_json::Map<String, serde_json::Value>) {
    let device = bench_device();
    println!("paired forward overhead, {rounds} rounds, device {device:?}");
    let variants = wanted(&VARIANTS);
    for Shape { name, config } in shapes() {
        device.seed(0);
        let models = with_variants(&config.init(&device).unwrap(), &variants);
        for batch in [8, 1] {
            let title = format!("forward {name} {batch}x128");
            let input = input(batch, 128, &device);
            out.extend(paired_forwards(&title, rounds, &variants, &models, &input));
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

/// AdapterDrop on MiniLM with `seq_bn`: the forward (8 × 128) and a `train_adapter` step with the
/// adapters of 0, 3 and 5 of the 6 layers skipped, each over none skipped; the base model's
/// forward for scale.
fn adapter_drop(rounds: usize, out: &mut serde_json::Map<String, serde_json::Value>) {
    const DROPPED: [(&str, usize); 3] = [("drop 3", 3), ("drop 5", 5), ("drop 0", 0)];
    for Shape { name, config } in shapes().into_iter().filter(|s| s.name == "minilm") {
        let device = bench_device();
        println!("\npaired AdapterDrop forward, {rounds} rounds, device {device:?}");
        device.seed(0);
        let base = config.init(&device).unwrap();
        let input = input(8, 128, &device);
        let mut models: Vec<(&str, BertModel)> = DROPPED
            .iter()
            .map(|(label, dropped)| {
                let mut model = with_variant(&base, Some("seq_bn"), false);
                let layers: Vec<usize> = (0..*dropped).collect();
                model.set_active_adapters_skipping("a", &layers).unwrap();
                (*label, model)
            })
            .collect();
        models.insert(0, ("base", base));
        let runs = models
            .iter()
            .map(|(label, model)| {
                let run: Run = Box::new(|| forward_sum(model, &input));
                (*label, run)
            })
            .collect();
        let reference = models.len() - 1;
        out.extend(paired(
            &format!("drop forward {name} 8x128"),
            rounds,
            reference,
            runs,
        ));

        let device = device_with(true);
        println!("\npaired AdapterDrop train step, {rounds} rounds, device {device:?}");
        device.seed(0);
        let base = config.init(&device).unwrap();
        let runs: Vec<(&str, Run)> = DROPPED
            .iter()
            .map(|(label, dropped)| {
                let mut train = TrainStep::new(&base, "seq_bn", &device).dropping(*dropped);
                let run: Run = Box::new(move || train.step());
                (*label, run)
            })
            .collect();
        let reference = runs.len() - 1;
        out.extend(paired(
            &format!("drop train step {name} 8x128"),
            rounds,
            reference,
            runs,
        ));
    }
}

/// Every method of the method chooser on MiniLM 8×128 (docs/adapter-or-lora.md).
fn methods(rounds: usize, out: &mut serde_json::Map<String, serde_json::Value>) {
    let device = bench_device();
    println!("\npaired forward overhead of every method, {rounds} rounds, device {device:?}");
    let Some(Shape { config, .. }) = shapes().into_iter().find(|s| s.name == "minilm") else {
        return;
    };
    device.seed(0);
    let variants = wanted(&METHODS);
    let models = with_variants(&config.init(&device).unwrap(), &variants);
    let input = input(8, 128, &device);
    let title = "methods minilm 8x128";
    out.extend(paired_forwards(title, rounds, &variants, &models, &input));
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
    if wanted("methods") {
        methods(rounds, &mut out);
    }
    if wanted("drop") {
        adapter_drop(rounds, &mut out);
    }
    if let Ok(path) = std::env::var("BURN_ADAPTERS_BENCH_OUT") {
        let json = serde_json::to_string_pretty(&out).expect("a map of numbers");
        std::fs::write(&path, json).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}
