//! Generation throughput and the per-token cost of adapters: greedy decoding of 64 new tokens
//! after a 32-token prompt, batch 1 and 8, on a Llama of SmolLM-135M's shape (hidden 576, 30
//! layers, 9 query and 3 key/value heads, FFN 1536, vocabulary 49152, tied embeddings; random
//! weights). Each round runs the base model and every variant back to back (see
//! `common::paired`); the ratio of a variant is its generation time over the base model's in the
//! same round, i.e. its per-token overhead. `tools/bench_generate.py` measures transformers
//! (eager attention, KV cache, same shape and threads) the same way.
//!
//! ```text
//! [BURN_ADAPTERS_BENCH_DEVICE=flex|tch] [BURN_ADAPTERS_BENCH_ROUNDS=10] cargo bench --bench generate
//! ```

mod common;

use burn::tensor::{Distribution, Int, Tensor};
use burn_adapters::generation::{GenerationConfig, generate};
use burn_adapters::models::llama::{LlamaConfig, LlamaModel};
use common::paired::{Run, paired};
use common::{bench_device, with_variant};

const PROMPT: usize = 32;
const NEW_TOKENS: usize = 64;

/// (label, config, merged); the first is the base model.
const VARIANTS: [(&str, Option<&str>, bool); 4] = [
    ("base", None, false),
    ("seq_bn", Some("seq_bn"), false),
    ("lora", Some("lora[init_weights=bert]"), false),
    ("lora merged", Some("lora[init_weights=bert]"), true),
];

fn smollm_135m_shape() -> LlamaConfig {
    let mut config = LlamaConfig::new(49152, 576, 30, 9, 3, 1536);
    config.tie_word_embeddings = true;
    config
}

fn main() {
    let rounds: usize = std::env::var("BURN_ADAPTERS_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let device = bench_device();
    println!("paired generation, {rounds} rounds, device {device:?}");
    device.seed(0);
    let base = smollm_135m_shape().init(&device).unwrap();
    let models: Vec<LlamaModel> = VARIANTS
        .iter()
        .map(|(_, spec, merged)| with_variant(&base, *spec, *merged))
        .collect();
    let config = GenerationConfig::new(NEW_TOKENS);
    let mut out = serde_json::Map::new();
    for batch in [1, 8] {
        device.seed(1);
        let prompt = Tensor::<2, Int>::random(
            [batch, PROMPT],
            Distribution::Uniform(3.0, 49000.0),
            &device,
        );
        let mask = prompt.ones_like();
        let runs = VARIANTS
            .iter()
            .zip(&models)
            .map(|((label, ..), model)| {
                let (prompt, mask, config) = (prompt.clone(), mask.clone(), &config);
                let run: Run<'_> = Box::new(move || {
                    let tokens =
                        generate(model, prompt.clone(), mask.clone(), config, |_, _| {}).unwrap();
                    tokens.iter().map(Vec::len).sum::<usize>() as f32
                });
                (*label, run)
            })
            .collect();
        let title = format!("generate batch {batch}");
        let table = paired(&title, rounds, 0, runs);
        if let Some(median) = table[&format!("{title}/base")]["median"].as_f64() {
            let rate = (batch * NEW_TOKENS) as f64 / median;
            println!(
                "base: {rate:.1} tokens/s ({:.1} ms per step)",
                median * 1e3 / NEW_TOKENS as f64
            );
        }
        out.extend(table);
    }
    if let Ok(path) = std::env::var("BURN_ADAPTERS_BENCH_OUT") {
        let json = serde_json::to_string_pretty(&out).expect("a map of numbers");
        std::fs::write(&path, json).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}
