//! Shapes, devices and inputs shared by the benches.
#![allow(dead_code)]

use burn::tensor::{Device, Distribution, Int, Tensor};
use burn_adapters::backend::device_by_name;
use burn_adapters::models::bert::{BertConfig, BertInput, BertModel};
use burn_adapters::prelude::*;

// burn-flex allocates a fresh buffer for most ops; glibc returns large ones to the OS and
// page-faults them in again on the next forward. mimalloc keeps them: the CPU forward gets ~15 %
// faster and the ratios stop depending on allocation patterns (see docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A named model shape.
pub struct Shape {
    pub name: &'static str,
    pub config: BertConfig,
}

/// The device named by `--device NAME` or `BURN_ADAPTERS_BENCH_DEVICE` (default flex),
/// optionally with autodiff.
pub fn device_with(autodiff: bool) -> Device {
    let from_args = std::env::args().skip_while(|a| a != "--device").nth(1);
    let name = from_args
        .or_else(|| std::env::var("BURN_ADAPTERS_BENCH_DEVICE").ok())
        .unwrap_or_else(|| "flex".into());
    let name = if autodiff {
        format!("{name}+autodiff")
    } else {
        name
    };
    device_by_name(&name).expect("a backend compiled into this build")
}

pub fn bench_device() -> Device {
    device_with(false)
}

/// MiniLM-L6 and bert-base, filtered by `BURN_ADAPTERS_BENCH_SHAPES`.
pub fn shapes() -> Vec<Shape> {
    let wanted =
        std::env::var("BURN_ADAPTERS_BENCH_SHAPES").unwrap_or_else(|_| "minilm,bert-base".into());
    [
        Shape {
            name: "minilm",
            config: BertConfig::new(30522, 384, 6, 12, 1536),
        },
        Shape {
            name: "bert-base",
            config: BertConfig::bert_base(),
        },
    ]
    .into_iter()
    .filter(|s| wanted.split(',').any(|w| w.trim() == s.name))
    .collect()
}

/// Random token ids, no padding.
pub fn input(batch: usize, seq: usize, device: &Device) -> BertInput {
    device.seed(1);
    let ids = Tensor::<2, Int>::random([batch, seq], Distribution::Uniform(1.0, 30000.0), device);
    BertInput::new(ids, Tensor::ones([batch, seq], device))
}

/// The forward variants: (label, config, merged); the first is the base model.
pub const VARIANTS: [(&str, Option<&str>, bool); 7] = [
    ("base", None, false),
    ("seq_bn", Some("seq_bn"), false),
    ("double_seq_bn", Some("double_seq_bn"), false),
    ("par_bn", Some("par_bn"), false),
    ("lora", Some("lora[init_weights=bert]"), false),
    ("lora merged", Some("lora[init_weights=bert]"), true),
    ("ia3", Some("ia3"), false),
];

/// `base` with the adapter of a variant added as `a`, active, and merged if asked.
pub fn with_variant(base: &BertModel, spec: Option<&str>, merged: bool) -> BertModel {
    let mut model = base.clone();
    if let Some(spec) = spec {
        model
            .add_adapter("a", AdapterConfig::load(spec).unwrap())
            .unwrap();
        model.set_active_adapters("a").unwrap();
        if merged {
            model.merge_adapter("a").unwrap();
        }
    }
    model
}

/// One forward pass, read back to the host (a scalar) so the device has finished its work.
pub fn forward_sum(model: &BertModel, input: &BertInput) -> f32 {
    model
        .forward(input.clone())
        .last_hidden_state
        .sum()
        .into_scalar::<f32>()
}
