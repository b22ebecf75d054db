//! One training step (forward, backward, AdamW) on the MiniLM-L6 shape (or those
//! `BURN_ADAPTERS_BENCH_SHAPES` names: `minilm,bert-base`), batch 8 × 128:
//! `train_adapter(seq_bn)`, `train_adapter(lora)` and full fine-tuning, with a mean-pooled
//! 2-class head and cross-entropy, as in the sentiment example. With
//! `BURN_ADAPTERS_BENCH_CHECKPOINTING=1`, on a device with burn's gradient checkpointing
//! (memory-bound activations recomputed in the backward pass).
//!
//! ```text
//! [BURN_ADAPTERS_BENCH_DEVICE=flex|wgpu|tch|cuda] cargo bench [--features tch] --bench train --
//! ```

mod common;

use std::hint::black_box;

use common::{TRAIN_VARIANTS, TrainStep, device_with, shapes};
use criterion::{Criterion, criterion_group, criterion_main};

fn train_step(c: &mut Criterion) {
    let checkpointing = std::env::var("BURN_ADAPTERS_BENCH_CHECKPOINTING").is_ok_and(|v| v == "1");
    let device = match checkpointing {
        true => device_with(true).gradient_checkpointing(),
        false => device_with(true),
    };
    let suffix = if checkpointing { " checkpointed" } else { "" };
    let chosen = std::env::var("BURN_ADAPTERS_BENCH_SHAPES").is_ok();
    for shape in shapes()
        .into_iter()
        .filter(|s| chosen || s.name == "minilm")
    {
        device.seed(0);
        let base = shape.config.init(&device).unwrap();
        let mut group = c.benchmark_group(format!("train step {} 8x128{suffix}", shape.name));
        group.sample_size(10);
        for variant in TRAIN_VARIANTS {
            let mut train = TrainStep::new(&base, variant, &device);
            group.bench_function(variant, |b| b.iter(|| black_box(train.step())));
        }
        group.finish();
    }
}

criterion_group!(benches, train_step);
criterion_main!(benches);
