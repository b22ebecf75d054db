//! One training step (forward, backward, Adam) on the MiniLM-L6 shape, batch 8 × 128:
//! `train_adapter(seq_bn)`, `train_adapter(lora)` and full fine-tuning, with a mean-pooled
//! 2-class head and cross-entropy, as in the sentiment example.
//!
//! ```text
//! [BURN_ADAPTERS_BENCH_DEVICE=flex|wgpu|tch|cuda] cargo bench [--features tch] --bench train --
//! ```

mod common;

use std::hint::black_box;

use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Int, Tensor};
use burn_adapters::heads::HeadConfig;
use burn_adapters::models::bert::BertModel;
use burn_adapters::prelude::*;
use burn_adapters::train::cross_entropy;
use common::{device_with, input, shapes};
use criterion::{Criterion, criterion_group, criterion_main};

fn train_step(c: &mut Criterion) {
    let device = device_with(true);
    for shape in shapes().into_iter().filter(|s| s.name == "minilm") {
        device.seed(0);
        let base = BertModel::new(&shape.config, &device);
        let batch = input(8, 128, &device);
        let labels = Tensor::<1, Int>::from_ints([0, 1, 0, 1, 1, 0, 0, 1], &device);
        let mut group = c.benchmark_group(format!("train step {} 8x128", shape.name));
        group.sample_size(10);
        for variant in ["seq_bn", "lora", "full fine-tuning"] {
            let mut model = base.clone();
            model
                .add_head("task", HeadConfig::mean_pooled_linear(2))
                .unwrap();
            if variant == "full fine-tuning" {
                model.freeze_model(false);
            } else {
                model
                    .add_adapter("task", AdapterConfig::load(variant).unwrap())
                    .unwrap();
                model.train_adapter("task").unwrap();
            }
            let mut optim = AdamWConfig::new().init();
            let mut slot = Some(model);
            group.bench_function(variant, |b| {
                b.iter(|| {
                    let model = slot.take().expect("model");
                    let logits = model.classify("task", batch.clone()).unwrap();
                    let loss = cross_entropy(logits, labels.clone());
                    let value = loss.clone().into_scalar::<f32>();
                    let grads = GradientsParams::from_grads(loss.backward(), &model);
                    slot = Some(optim.step(1e-4, model, grads));
                    black_box(value)
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, train_step);
criterion_main!(benches);
