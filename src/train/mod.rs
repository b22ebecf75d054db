//! Training helpers that stay within burn's idioms: burn's AdamW with gradient clipping, a
//! warmup/decay learning-rate schedule, running metrics for a progress display, and
//! AdapterDrop. With the `train` feature, [`learner`] trains adapter models on burn-train's
//! `Learner` instead (its loop, metrics, schedulers, checkpoints and multi-device strategies).
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor};
//! use burn_adapters::heads::HeadConfig;
//! use burn_adapters::models::bert::{BertConfig, BertInput, BertModel};
//! use burn_adapters::prelude::*;
//! use burn_adapters::train::{Trainer, TrainingConfig, cross_entropy};
//!
//! let device = Device::flex().autodiff();
//! let mut model = BertConfig::tiny().init(&device)?;
//! model.add_adapter("task", BnConfig::seq_bn())?;
//! model.add_head("task", HeadConfig::classification(2))?;
//! model.train_adapter("task")?; // adapter + head train, the encoder is frozen
//!
//! let mut trainer = Trainer::new(&TrainingConfig::new(), 10);
//! let ids = Tensor::<2, Int>::from_ints([[2, 7, 3], [2, 9, 3]], &device);
//! let labels = Tensor::<1, Int>::from_ints([0, 1], &device);
//! let logits = model.classify("task", BertInput::new(ids.clone(), ids.ones_like()))?;
//! let loss = cross_entropy(logits, labels);
//! model = trainer.step(model, loss);
//! # Ok::<(), burn_adapters::Error>(())
//! ```

use std::time::Instant;

use burn::config::Config;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{
    AdamWConfig, GradientsParams, ModuleOptimizer, grad_clipping::GradientClippingConfig,
};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::composition::{AdapterSetup, IntoAdapterSetup};
use crate::error::{Error, Result};
use crate::model::AdapterModel;

#[cfg(feature = "train")]
#[cfg_attr(docsrs, doc(cfg(feature = "train")))]
pub mod checkpoint;
#[cfg(feature = "train")]
#[cfg_attr(docsrs, doc(cfg(feature = "train")))]
pub mod learner;

/// Hyper-parameters of [`Trainer`].
#[derive(Config, Debug)]
pub struct TrainingConfig {
    /// Peak learning rate.
    #[config(default = 1e-3)]
    pub learning_rate: f64,
    /// Fraction of the steps spent warming up linearly from 0 to the peak.
    #[config(default = 0.0)]
    pub warmup_ratio: f64,
    /// After the warmup, decay linearly to 0 (transformers' `get_linear_schedule_with_warmup`);
    /// otherwise stay at the peak.
    #[config(default = false)]
    pub linear_decay: bool,
    /// AdamW's decoupled weight decay.
    #[config(default = 0.01)]
    pub weight_decay: f32,
    /// AdamW's epsilon (PyTorch's default; burn's own default is 1e-5).
    #[config(default = 1e-8)]
    pub epsilon: f32,
    /// Clip gradients to this global norm (`None`: no clipping).
    #[config(default = "None")]
    pub max_grad_norm: Option<f32>,
}

impl TrainingConfig {
    /// burn's AdamW with this config's weight decay, epsilon and clipping, e.g. for
    /// burn-train's `Learner` (the learning rate comes from its scheduler).
    pub fn optimizer(&self) -> ModuleOptimizer {
        AdamWConfig::new()
            .with_weight_decay(self.weight_decay)
            .with_epsilon(self.epsilon)
            .with_grad_clipping(self.max_grad_norm.map(GradientClippingConfig::Norm))
            .init()
    }
}

/// Runs optimisation steps with burn's AdamW and the configured schedule.
pub struct Trainer {
    optim: ModuleOptimizer,
    peak: f64,
    linear_decay: bool,
    warmup_steps: usize,
    total_steps: usize,
    step: usize,
}

impl Trainer {
    /// A trainer for `total_steps` optimisation steps.
    pub fn new(config: &TrainingConfig, total_steps: usize) -> Self {
        Self {
            optim: config.optimizer(),
            peak: config.learning_rate,
            linear_decay: config.linear_decay,
            warmup_steps: (total_steps as f64 * config.warmup_ratio).round() as usize,
            total_steps: total_steps.max(1),
            step: 0,
        }
    }

    /// The learning rate of the next step.
    pub fn learning_rate(&self) -> f64 {
        let step = self.step as f64;
        if self.step < self.warmup_steps {
            self.peak * (step + 1.0) / self.warmup_steps as f64
        } else if !self.linear_decay {
            self.peak
        } else {
            let remaining = self.total_steps.saturating_sub(self.step) as f64;
            let decay_steps = (self.total_steps - self.warmup_steps).max(1) as f64;
            self.peak * (remaining / decay_steps).clamp(0.0, 1.0)
        }
    }

    /// Back-propagates `loss` and updates `model`'s trainable parameters (frozen ones, e.g. the
    /// base model under `train_adapter`, get no gradients and stay bit-identical).
    pub fn step<M: Module>(&mut self, model: M, loss: Tensor<1>) -> M {
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = self.learning_rate();
        self.step += 1;
        self.optim.step(lr, model, grads)
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.step
    }
}

/// Mean cross-entropy of `logits` against class ids.
///
/// # Shapes
///
/// - logits: `[batch, classes]`, labels: `[batch]`, output: `[1]`
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits, labels)
}

/// The label of positions a causal-LM loss skips (prompt and padding), as in transformers.
pub const IGNORE_INDEX: i64 = -100;

/// Mean next-token cross-entropy of a causal LM, as transformers' `ForCausalLMLoss`: the logits
/// at position `t` predict `labels[t + 1]`, and labels equal to [`IGNORE_INDEX`] count for
/// nothing. A batch without any label left gives NaN, as in PyTorch. Checking the labels' range
/// reads one flag back from the device.
///
/// Labels are usually the input ids with [`IGNORE_INDEX`] at padding and at the prompt:
/// `input_ids.mask_fill(attention_mask.equal_elem(0), IGNORE_INDEX)`.
///
/// # Shapes
///
/// - logits: `[batch, seq, vocab]`, labels: `[batch, seq]`, output: `[1]`
pub fn causal_lm_loss(logits: Tensor<3>, labels: Tensor<2, Int>) -> Result<Tensor<1>> {
    let [batch, seq, vocab] = logits.dims();
    if labels.dims() != [batch, seq] {
        return Err(Error::input(
            "labels",
            format!(
                "shape {:?}, but the logits are [{batch}, {seq}, {vocab}]",
                labels.dims()
            ),
        ));
    }
    if seq < 2 {
        return Err(Error::input(
            "labels",
            "a causal-LM loss needs at least two positions",
        ));
    }
    let n = batch * (seq - 1);
    let logits = logits.narrow(1, 0, seq - 1).reshape([n, vocab]);
    let targets = labels.narrow(1, 1, seq - 1).reshape([n]);
    let counted = targets.clone().not_equal_elem(IGNORE_INDEX);
    let outside = targets.clone().lower_elem(0).bool_and(counted.clone());
    let outside = outside.bool_or(targets.clone().greater_equal_elem(vocab as i64));
    if outside.any().into_scalar::<bool>() {
        return Err(Error::input(
            "labels",
            format!("values outside 0..{vocab} other than {IGNORE_INDEX}"),
        ));
    }
    let safe = targets
        .mask_fill(counted.clone().bool_not(), 0)
        .reshape([n, 1]);
    let picked = log_softmax(logits, 1).gather(1, safe).reshape([n]);
    let counted = counted.float();
    Ok((picked * counted.clone()).sum().neg() / counted.sum())
}

/// How many rows of `logits` have their maximum at `labels`.
pub fn correct_predictions(logits: Tensor<2>, labels: Tensor<1, Int>) -> usize {
    let [batch, _] = logits.dims();
    let predicted = logits.argmax(1).reshape([batch]);
    predicted.equal(labels).int().sum().into_scalar::<i64>() as usize
}

/// Loss, accuracy and throughput accumulated over batches.
#[derive(Debug, Clone)]
pub struct RunningMetrics {
    loss_sum: f64,
    batches: usize,
    correct: usize,
    examples: usize,
    started: Instant,
}

impl Default for RunningMetrics {
    fn default() -> Self {
        Self {
            loss_sum: 0.0,
            batches: 0,
            correct: 0,
            examples: 0,
            started: Instant::now(),
        }
    }
}

impl RunningMetrics {
    /// Adds one batch.
    pub fn update(&mut self, loss: f64, correct: usize, examples: usize) {
        self.loss_sum += loss;
        self.batches += 1;
        self.correct += correct;
        self.examples += examples;
    }

    /// Mean batch loss.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.batches.max(1) as f64
    }

    /// Fraction of examples predicted correctly.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.examples.max(1) as f64
    }

    /// Examples per second since creation.
    pub fn examples_per_second(&self) -> f64 {
        self.examples as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Examples seen.
    pub fn examples(&self) -> usize {
        self.examples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let config = TrainingConfig::new()
            .with_warmup_ratio(0.2)
            .with_linear_decay(true);
        let mut trainer = Trainer::new(&config, 10);
        let mut rates = Vec::new();
        for _ in 0..10 {
            rates.push(trainer.learning_rate());
            trainer.step += 1;
        }
        assert_eq!(rates[0], 1e-3 * 0.5);
        assert_eq!(rates[1], 1e-3);
        assert_eq!(rates[2], 1e-3);
        assert!(rates.windows(2).skip(2).all(|w| w[1] < w[0]));
        assert!(rates[9] > 0.0 && rates[9] < 2e-4);
        let mut constant = Trainer::new(&TrainingConfig::new(), 10);
        constant.step = 7;
        assert_eq!(constant.learning_rate(), 1e-3);
    }
}

/// AdapterDrop while training (Rücklé et al., 2021): before each step, the adapters of the
/// first `n` layers are skipped, `n` drawn uniformly from `0..=max_dropped` by a seeded
/// generator, so the trained adapters keep working when lower layers are dropped at inference
/// ([`AdapterModel::set_active_adapters_skipping`]).
///
/// ```
/// use burn::tensor::Device;
/// use burn_adapters::models::bert::BertConfig;
/// use burn_adapters::prelude::*;
/// use burn_adapters::train::AdapterDrop;
///
/// let mut model = BertConfig::tiny().init(&Device::flex().autodiff())?;
/// model.add_adapter("task", BnConfig::seq_bn())?;
/// model.train_adapter("task")?;
/// let mut drop = AdapterDrop::new("task", 1, 7)?;
/// let dropped = drop.apply(&mut model)?; // before each step
/// assert!(dropped <= 1);
/// assert_eq!(model.registry().skip_layers().len(), dropped);
/// # Ok::<(), burn_adapters::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct AdapterDrop {
    setup: AdapterSetup,
    max_dropped: usize,
    rng: StdRng,
}

impl AdapterDrop {
    /// Drops up to `max_dropped` lower layers of `setup`, drawing with `seed`.
    pub fn new(setup: impl IntoAdapterSetup, max_dropped: usize, seed: u64) -> Result<Self> {
        Ok(Self {
            setup: setup.into_setup()?,
            max_dropped,
            rng: StdRng::seed_from_u64(seed),
        })
    }

    /// Activates the setup with the adapters of a newly drawn number of lower layers skipped,
    /// and returns that number.
    pub fn apply<M: AdapterModel>(&mut self, model: &mut M) -> Result<usize> {
        let dropped = self.rng.random_range(0..=self.max_dropped);
        let layers: Vec<usize> = (0..dropped).collect();
        model.set_active_adapters_skipping(self.setup.clone(), &layers)?;
        Ok(dropped)
    }
}
