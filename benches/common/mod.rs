//! Shapes, devices and inputs shared by the benches.
#![allow(dead_code)]

use burn::tensor::{Device, Distribution, Int, Tensor};
use burn_adapters::backend::device_by_name;
use burn_adapters::models::bert::{BertConfig, BertInput};

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
