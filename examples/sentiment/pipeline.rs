//! The model-agnostic part of the sentiment example: batching, training, evaluation.
//! Shared with `tests/sentiment_pipeline.rs`, which runs it on a tiny random model.
#![allow(dead_code)]

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_adapters::Result;
use burn_adapters::models::bert::{BertInput, BertModel};
use burn_adapters::train::{
    RunningMetrics, Trainer, TrainingConfig, correct_predictions, cross_entropy,
};

/// One tokenised example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Token ids, including `[CLS]` and `[SEP]`.
    pub ids: Vec<i64>,
    /// Class id.
    pub label: usize,
}

/// Batches of example indices. Examples are sorted by length within chunks of 50 batches
/// (less padding), and the batch order is shuffled deterministically by `seed`.
pub fn batches(examples: &[Example], batch_size: usize, seed: Option<u64>) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    if let Some(seed) = seed {
        shuffle(&mut order, seed);
    }
    let chunk = batch_size * 50;
    let mut out = Vec::new();
    for window in order.chunks(chunk) {
        let mut window = window.to_vec();
        window.sort_by_key(|&i| examples[i].ids.len());
        out.extend(window.chunks(batch_size).map(<[usize]>::to_vec));
    }
    if let Some(seed) = seed {
        shuffle(&mut out, seed ^ 0x9e37_79b9);
    }
    out
}

/// Fisher–Yates with a small LCG, so runs are reproducible without extra dependencies.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for i in (1..items.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = ((state >> 33) as usize) % (i + 1);
        items.swap(i, j);
    }
}

/// FNV-1a over the batches of `epochs` epochs as `fit` draws them, so that another
/// implementation (tools/sentiment_reference.py) can show it trains on the same batches.
pub fn batch_order_fnv1a(examples: &[Example], batch_size: usize, epochs: usize) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for epoch in 0..epochs {
        for batch in batches(examples, batch_size, Some(epoch as u64 + 1)) {
            for index in batch.into_iter().chain([usize::MAX]) {
                for byte in (index as u64).to_le_bytes() {
                    hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
    }
    format!("{hash:016x}")
}

/// Pads a batch to its longest example, or to `pad_to` tokens if that is more:
/// `(input, labels)`.
pub fn make_batch(
    examples: &[Example],
    indices: &[usize],
    pad_to: usize,
    device: &Device,
) -> (BertInput, Tensor<1, Int>) {
    let width = indices
        .iter()
        .map(|&i| examples[i].ids.len())
        .max()
        .unwrap_or(1)
        .max(pad_to);
    let mut ids = Vec::with_capacity(indices.len() * width);
    let mut mask = Vec::with_capacity(indices.len() * width);
    for &i in indices {
        let row = &examples[i].ids;
        ids.extend(
            row.iter()
                .copied()
                .chain(std::iter::repeat_n(0, width - row.len())),
        );
        mask.extend(
            std::iter::repeat_n(1i64, row.len()).chain(std::iter::repeat_n(0, width - row.len())),
        );
    }
    let shape = [indices.len(), width];
    let labels: Vec<i64> = indices.iter().map(|&i| examples[i].label as i64).collect();
    (
        BertInput::new(
            Tensor::from_data(TensorData::new(ids, shape), device),
            Tensor::from_data(TensorData::new(mask, shape), device),
        ),
        Tensor::from_data(TensorData::new(labels, [indices.len()]), device),
    )
}

/// What happened in one epoch.
#[derive(Debug, Clone)]
pub struct EpochLog {
    /// Training loss of every step.
    pub step_losses: Vec<f64>,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy (on the fly).
    pub train_accuracy: f64,
    /// Accuracy on the evaluation set after the epoch.
    pub eval_accuracy: f64,
    /// Seconds spent training (not evaluating).
    pub train_seconds: f64,
}

/// Trains `head` (and whatever `train_adapter`/`train_head` made trainable) on `train`, in
/// batches padded to their longest row or to `pad_to` tokens if that is more, evaluating on
/// `eval` after each epoch. `progress(step, metrics)` is called after every step.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    mut model: BertModel,
    head: &str,
    train: &[Example],
    eval: &[Example],
    epochs: usize,
    batch_size: usize,
    pad_to: usize,
    config: &TrainingConfig,
    device: &Device,
    mut progress: impl FnMut(usize, &RunningMetrics),
) -> Result<(BertModel, Vec<EpochLog>)> {
    let steps_per_epoch = train.len().div_ceil(batch_size);
    let mut trainer = Trainer::new(config, steps_per_epoch * epochs);
    let mut logs = Vec::new();
    for epoch in 0..epochs {
        let started = std::time::Instant::now();
        let mut metrics = RunningMetrics::default();
        let mut step_losses = Vec::new();
        for (step, batch) in batches(train, batch_size, Some(epoch as u64 + 1))
            .iter()
            .enumerate()
        {
            let (input, labels) = make_batch(train, batch, pad_to, device);
            let logits = model.classify(head, input)?;
            let correct = correct_predictions(logits.clone().detach(), labels.clone());
            let loss = cross_entropy(logits, labels);
            let loss_value = loss.clone().into_scalar::<f32>() as f64;
            model = trainer.step(model, loss);
            metrics.update(loss_value, correct, batch.len());
            step_losses.push(loss_value);
            progress(step + 1, &metrics);
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let (eval_accuracy, _) = evaluate(&model, head, eval, batch_size * 2, device)?;
        logs.push(EpochLog {
            train_loss: metrics.loss(),
            train_accuracy: metrics.accuracy(),
            step_losses,
            eval_accuracy,
            train_seconds,
        });
    }
    Ok((model, logs))
}

/// Accuracy and predicted class of every example, in inference mode (no dropout, no graph).
pub fn evaluate(
    model: &BertModel,
    head: &str,
    examples: &[Example],
    batch_size: usize,
    device: &Device,
) -> Result<(f64, Vec<usize>)> {
    let model = model.valid();
    let device = device.clone().without_autodiff();
    let mut predictions = vec![0; examples.len()];
    for batch in batches(examples, batch_size, None) {
        let (input, _) = make_batch(examples, &batch, 0, &device);
        let logits = model.classify(head, input)?;
        let [rows, _] = logits.dims();
        let predicted: Vec<i64> = logits
            .argmax(1)
            .reshape([rows])
            .into_data()
            .convert::<i64>()
            .try_to_vec()
            .unwrap_or_default();
        for (&i, p) in batch.iter().zip(predicted) {
            predictions[i] = p as usize;
        }
    }
    let correct = examples
        .iter()
        .zip(&predictions)
        .filter(|(e, p)| e.label == **p)
        .count();
    Ok((correct as f64 / examples.len().max(1) as f64, predictions))
}
