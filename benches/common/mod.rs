//! Shapes, devices and inputs shared by the benches.
#![allow(dead_code)]

pub mod paired;

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

/// Every method of the method chooser (docs/adapter-or-lora.md) with the main job's configs:
/// (label, config, merged); the first is the base model, `lora merged` the A/A control.
pub const METHODS: [(&str, Option<&str>, bool); 20] = [
    ("base", None, false),
    ("lora merged", Some("lora[init_weights=bert]"), true),
    ("pfeiffer", Some("pfeiffer[reduction_factor=16]"), false),
    ("lora", Some("lora[init_weights=bert]"), false),
    (
        "lora q,k,v,ffn",
        Some(
            "lora[init_weights=bert,attn_matrices=[q,k,v],intermediate_lora=True,output_lora=True]",
        ),
        false,
    ),
    ("ia3", Some("ia3"), false),
    ("prefix_tuning", Some("prefix_tuning"), false),
    ("prefix_tuning_flat", Some("prefix_tuning_flat"), false),
    ("prompt_tuning", Some("prompt_tuning"), false),
    ("loreft", Some("loreft"), false),
    ("seq_bn_inv", Some("seq_bn_inv"), false),
    ("mtl_lora", Some("mtl_lora[n_up_projection=2]"), false),
    ("dora", Some("dora"), false),
    ("adapter_plus", Some(ADAPTER_PLUS), false),
    ("unipelt", Some("unipelt"), false),
    ("mam", Some("mam"), false),
    ("vera", Some("vera"), false),
    ("dvora", Some("dvora"), false),
    ("compacter++", Some("compacter++"), false),
    (
        "compacter++ own rules",
        Some("compacter++[shared_phm_rule=False]"),
        false,
    ),
];

/// AdapterPlus as the main job ran it (AdapterHub has no preset name for it).
const ADAPTER_PLUS: &str = r#"{"architecture": "bottleneck", "mh_adapter": false, "output_adapter": true,
    "reduction_factor": 96, "non_linearity": "gelu", "original_ln_before": true,
    "original_ln_after": false, "residual_before_ln": false, "stochastic_depth": 0.1,
    "init_weights": "houlsby", "scaling": "channel"}"#;

/// `base` with the adapter of a variant added as `a`, active, and merged if asked.
pub fn with_variant<M: AdapterModel>(base: &M, spec: Option<&str>, merged: bool) -> M {
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

/// The train-step variants; the last is the reference the others are compared with.
pub const TRAIN_VARIANTS: [&str; 3] = ["seq_bn", "lora", "full fine-tuning"];

/// One training step at a time (forward, backward, AdamW) of a model with a mean-pooled 2-class
/// head and cross-entropy, as in the sentiment example: `train_adapter` of a fresh adapter of
/// the variant's config, or full fine-tuning.
pub struct TrainStep {
    model: Option<BertModel>,
    optim: burn::optim::ModuleOptimizer,
    batch: BertInput,
    labels: Tensor<1, Int>,
}

impl TrainStep {
    /// `base` (on `device`, an autodiff device) made ready to train `variant` on a batch of
    /// 8 × 128.
    pub fn new(base: &BertModel, variant: &str, device: &Device) -> Self {
        use burn_adapters::heads::HeadConfig;
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
        Self {
            model: Some(model),
            optim: burn::optim::AdamWConfig::new().init(),
            batch: input(8, 128, device),
            labels: Tensor::from_ints([0, 1, 0, 1, 1, 0, 0, 1], device),
        }
    }

    /// The same with the adapters of the first `dropped` layers skipped (AdapterDrop).
    pub fn dropping(mut self, dropped: usize) -> Self {
        let layers: Vec<usize> = (0..dropped).collect();
        let model = self.model.as_mut().expect("a model between steps");
        model.set_active_adapters_skipping("task", &layers).unwrap();
        self
    }

    /// One step; returns the loss (read back, so the device has finished).
    pub fn step(&mut self) -> f32 {
        use burn::optim::GradientsParams;
        let model = self
            .model
            .take()
            .expect("the model is put back after each step");
        let logits = model.classify("task", self.batch.clone()).unwrap();
        let loss = burn_adapters::train::cross_entropy(logits, self.labels.clone());
        let value = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        self.model = Some(self.optim.step(1e-4, model, grads));
        value
    }
}
