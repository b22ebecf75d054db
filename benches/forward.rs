//! Forward cost of bottleneck adapters relative to the base model, on the MiniLM-L6 shape
//! (hidden 384, 6 layers, 12 heads, FFN 1536), batch 8 × 128, random weights.
//!
//! ```text
//! cargo bench --bench forward -- [--device flex|wgpu|tch|cuda]
//! ```
//! The device can also be given as `BURN_ADAPTERS_BENCH_DEVICE`. Every timed call reads a scalar
//! back, so the device has finished its work when the clock stops.

use std::hint::black_box;

use burn::tensor::{Device, Int, Tensor};
use burn_adapters::backend::device_by_name;
use burn_adapters::models::bert::{BertConfig, BertInput, BertModel};
use burn_adapters::prelude::*;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench_device() -> Device {
    let from_args = std::env::args().skip_while(|a| a != "--device").nth(1);
    let name = from_args
        .or_else(|| std::env::var("BURN_ADAPTERS_BENCH_DEVICE").ok())
        .unwrap_or_else(|| "flex".into());
    device_by_name(&name).expect("a backend compiled into this build")
}

fn minilm_shape() -> BertConfig {
    BertConfig::new(30522, 384, 6, 12, 1536)
}

fn forward(c: &mut Criterion) {
    let device = bench_device();
    device.seed(0);
    let base = BertModel::new(&minilm_shape(), &device);
    let ids = Tensor::<2, Int>::random(
        [8, 128],
        burn::tensor::Distribution::Uniform(1.0, 30000.0),
        &device,
    );
    let input = || BertInput::new(ids.clone(), Tensor::ones([8, 128], &device));
    let mut group = c.benchmark_group("forward minilm 8x128");
    group.sample_size(20);
    let variants: [(&str, Option<&str>); 4] = [
        ("base", None),
        ("seq_bn rf16", Some("seq_bn")),
        ("double_seq_bn rf16", Some("double_seq_bn")),
        ("par_bn", Some("par_bn")),
    ];
    for (label, config) in variants {
        let mut model = base.clone();
        if let Some(config) = config {
            model
                .add_adapter("a", AdapterConfig::load(config).unwrap())
                .unwrap();
            model.set_active_adapters("a").unwrap();
        }
        group.bench_function(label, |b| {
            b.iter(|| {
                black_box(
                    model
                        .forward(input())
                        .last_hidden_state
                        .sum()
                        .into_scalar::<f32>(),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
