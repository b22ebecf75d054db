//! Adapter training on burn-train's [`Learner`](burn::train::Learner) (cargo feature `train`).
//!
//! burn-train runs the loop: epochs, metrics, its progress renderer, learning-rate schedulers,
//! early stopping, checkpoints, and the single-device, multi-device and distributed strategies.
//! This module supplies what it needs from an adapter model: [`AdapterClassifier`] implements
//! burn-train's `TrainStep` and `InferenceStep` for sequence classification with one head,
//! [`ClassificationDataset`] holds tokenised examples checked against the model, and
//! [`ClassificationBatcher`] pads them into batches on the side the host expects.
//!
//! ```
//! use std::sync::Arc;
//! use burn::data::dataloader::DataLoaderBuilder;
//! use burn::tensor::Device;
//! use burn::train::{Learner, SupervisedTraining};
//! use burn::train::metric::{AccuracyMetric, LossMetric};
//! use burn_adapters::heads::HeadConfig;
//! use burn_adapters::models::bert::{BertConfig, BertModel};
//! use burn_adapters::prelude::*;
//! use burn_adapters::train::TrainingConfig;
//! use burn_adapters::train::learner::{
//!     AdapterClassifier, ClassificationBatcher, ClassificationDataset, ClassificationExample,
//! };
//!
//! let device = Device::flex().autodiff();
//! let mut model = BertConfig::tiny().init(&device)?;
//! model.add_adapter("task", BnConfig::seq_bn())?;
//! model.add_head("task", HeadConfig::classification(2))?;
//! model.train_adapter("task")?;
//! let classifier = AdapterClassifier::new(model, "task")?;
//!
//! let examples = (0..8)
//!     .map(|i| ClassificationExample::new(vec![2, 5 + i % 3, 3], (i % 2) as usize))
//!     .collect();
//! let data = ClassificationDataset::new(&classifier, examples)?;
//! let loader = |data| {
//!     DataLoaderBuilder::new(ClassificationBatcher::<BertModel>::new(0))
//!         .batch_size(4)
//!         .set_device(device.clone())
//!         .build(data)
//! };
//! let dir = tempfile::tempdir().unwrap();
//! let result = SupervisedTraining::new(dir.path(), loader(data.clone()), loader(data))
//!     .metric_train_numeric(LossMetric::new())
//!     .metric_valid_numeric(AccuracyMetric::new())
//!     .num_epochs(1)
//!     .launch(Learner::new(classifier, TrainingConfig::new().optimizer(), 1e-3));
//! let trained: BertModel = result.model.into_model();
//! # let _ = trained;
//! # Ok::<(), burn_adapters::Error>(())
//! ```

use std::marker::PhantomData;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::module::{Module, ModuleDisplay};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

use crate::error::{Error, Result};
use crate::heads::HeadConfig;
use crate::model::AdapterModel;
use crate::train::cross_entropy;

/// Which end of a row padding goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingSide {
    /// Tokens first, padding after them (encoders).
    Right,
    /// Padding first, tokens after it (decoders, whose last position is the last token).
    Left,
}

/// What token sequences a host can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// Token ids must be below this.
    pub vocab_size: usize,
    /// Rows may have at most this many tokens.
    pub max_positions: usize,
}

/// A host that classifies token sequences with a named classification head: what
/// [`AdapterClassifier`] needs of a model.
pub trait Classify: AdapterModel + ModuleDisplay + Send + 'static {
    /// The host's input for a batch of token ids.
    type Input: Send + 'static;
    /// Where the host expects padding.
    const PADDING: PaddingSide;

    /// What token sequences the host can run.
    fn input_limits(&self) -> InputLimits;

    /// The host's input for padded token ids and their mask (1 = token, 0 = padding).
    ///
    /// # Shapes
    ///
    /// - input_ids, attention_mask: `[batch, seq]`
    fn classification_input(
        input_ids: Tensor<2, Int>,
        attention_mask: Tensor<2, Int>,
    ) -> Self::Input;

    /// Logits of classification head `head`.
    ///
    /// # Shapes
    ///
    /// - output: `[batch, num_labels]`
    fn classification_logits(&self, head: &str, input: Self::Input) -> Result<Tensor<2>>;
}

/// One tokenised text and its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassificationExample {
    /// Token ids, special tokens included, without padding.
    pub token_ids: Vec<u32>,
    /// Class id.
    pub label: usize,
}

impl ClassificationExample {
    /// An example from its token ids and class id.
    pub fn new(token_ids: Vec<u32>, label: usize) -> Self {
        Self { token_ids, label }
    }
}

/// Examples checked against a model: every row has tokens, ids below its vocabulary, at most
/// its positions, and a label below its head's number of classes, so that batches made of
/// them cannot fail inside a training step.
#[derive(Debug, Clone)]
pub struct ClassificationDataset {
    examples: Vec<ClassificationExample>,
}

impl ClassificationDataset {
    /// Checks `examples` against what `classifier` can run; the error names the first
    /// offending example (`examples[i].token_ids` or `.label`).
    pub fn new<M: Classify>(
        classifier: &AdapterClassifier<M>,
        examples: Vec<ClassificationExample>,
    ) -> Result<Self> {
        let limits = classifier.model.input_limits();
        let classes = classifier.num_labels()?;
        for (i, example) in examples.iter().enumerate() {
            check_example(i, example, limits, classes)?;
        }
        Ok(Self { examples })
    }
}

fn check_example(
    i: usize,
    example: &ClassificationExample,
    limits: InputLimits,
    classes: usize,
) -> Result<()> {
    let field = format!("examples[{i}].token_ids");
    let tokens = example.token_ids.len();
    if tokens == 0 {
        return Err(Error::input(field, "no tokens"));
    }
    if tokens > limits.max_positions {
        let most = limits.max_positions;
        return Err(Error::input(
            field,
            format!("{tokens} tokens, at most {most}"),
        ));
    }
    if let Some(id) = example
        .token_ids
        .iter()
        .find(|&&id| id as usize >= limits.vocab_size)
    {
        let vocab = limits.vocab_size;
        return Err(Error::input(
            field,
            format!("id {id}, the vocabulary has {vocab}"),
        ));
    }
    if example.label >= classes {
        let label = example.label;
        return Err(Error::input(
            format!("examples[{i}].label"),
            format!("{label}, the head has {classes} classes"),
        ));
    }
    Ok(())
}

impl Dataset<ClassificationExample> for ClassificationDataset {
    /// # Panics
    ///
    /// If `index` is out of bounds, as burn's datasets do.
    fn get(&self, index: usize) -> std::result::Result<ClassificationExample, DatasetError> {
        Ok(self.examples[index].clone())
    }

    fn len(&self) -> usize {
        self.examples.len()
    }
}

/// A padded batch and its labels.
#[derive(Debug, Clone)]
pub struct ClassificationBatch<I> {
    /// The host's input.
    pub input: I,
    /// Class ids, `[batch]`.
    pub labels: Tensor<1, Int>,
}

/// Pads [`ClassificationExample`]s to the longest row of each batch, on host `M`'s side.
pub struct ClassificationBatcher<M> {
    pad_token_id: u32,
    host: PhantomData<fn() -> M>,
}

impl<M> ClassificationBatcher<M> {
    /// Pads with `pad_token_id` (masked out, so any id the vocabulary has works).
    pub fn new(pad_token_id: u32) -> Self {
        Self {
            pad_token_id,
            host: PhantomData,
        }
    }
}

impl<M> Clone for ClassificationBatcher<M> {
    fn clone(&self) -> Self {
        Self::new(self.pad_token_id)
    }
}

impl<M: Classify> Batcher<ClassificationExample, ClassificationBatch<M::Input>>
    for ClassificationBatcher<M>
{
    fn batch(
        &self,
        items: Vec<ClassificationExample>,
        device: &Device,
    ) -> ClassificationBatch<M::Input> {
        let rows = items.len();
        let width = items.iter().map(|e| e.token_ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows * width);
        let mut mask = Vec::with_capacity(rows * width);
        for example in &items {
            let padding = width - example.token_ids.len();
            let tokens = example.token_ids.iter().map(|&id| i64::from(id));
            let pads = std::iter::repeat_n(i64::from(self.pad_token_id), padding);
            let ones = std::iter::repeat_n(1, example.token_ids.len());
            let zeros = std::iter::repeat_n(0, padding);
            match M::PADDING {
                PaddingSide::Right => {
                    ids.extend(tokens.chain(pads));
                    mask.extend(ones.chain(zeros));
                }
                PaddingSide::Left => {
                    ids.extend(pads.chain(tokens));
                    mask.extend(zeros.chain(ones));
                }
            }
        }
        let labels: Vec<i64> = items.iter().map(|e| e.label as i64).collect();
        let tensor = |values: Vec<i64>| {
            Tensor::<2, Int>::from_data(TensorData::new(values, [rows, width]), device)
        };
        ClassificationBatch {
            input: M::classification_input(tensor(ids), tensor(mask)),
            labels: Tensor::from_data(TensorData::new(labels, [rows]), device),
        }
    }
}

/// An adapter model with the classification head its loss reads: the model burn-train's
/// `Learner` trains. Which parameters train is the model's business (`train_adapter` freezes
/// the base; frozen parameters get no gradients and no optimiser state).
#[derive(Module, Debug)]
pub struct AdapterClassifier<M: Module> {
    model: M,
    head: String,
    /// What the loss is divided by before back-propagation (the number of data-parallel
    /// devices whose gradients burn-train sums).
    devices: usize,
}

impl<M: Classify> AdapterClassifier<M> {
    /// Trains `model` through its classification head `head`.
    pub fn new(model: M, head: &str) -> Result<Self> {
        let classifier = Self {
            model,
            head: head.to_string(),
            devices: 1,
        };
        classifier.num_labels()?;
        Ok(classifier)
    }

    /// For burn-train's multi-device strategy on `devices` devices: it sums the gradients of
    /// each device's batch, so each is divided by `devices` and a step moves by the mean
    /// gradient of the global batch, as one device running it would (exactly so when the
    /// devices' batches have the same size). The logged loss is not divided.
    pub fn with_devices(mut self, devices: usize) -> Result<Self> {
        if devices == 0 {
            return Err(Error::invalid("devices", devices, "at least one device"));
        }
        self.devices = devices;
        Ok(self)
    }

    /// The same classifier around `model`.
    pub(crate) fn with_model(self, model: M) -> Self {
        Self { model, ..self }
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model, e.g. after training, to save its adapter.
    pub fn into_model(self) -> M {
        self.model
    }

    /// The head's name.
    pub fn head(&self) -> &str {
        &self.head
    }

    /// The head's number of classes.
    pub fn num_labels(&self) -> Result<usize> {
        let head = self
            .model
            .heads()
            .and_then(|heads| heads.get(self.head.as_str()))
            .ok_or_else(|| Error::UnknownHead(self.head.clone()))?;
        match head.config {
            HeadConfig::Classification { num_labels, .. } => Ok(num_labels),
            _ => Err(Error::InvalidSetup(format!(
                "head `{}` is not a classification head",
                self.head
            ))),
        }
    }

    /// Logits and mean cross-entropy of a batch.
    ///
    /// # Panics
    ///
    /// If the model cannot run the batch; batches of a [`ClassificationDataset`] for this
    /// model always run (burn-train's steps cannot return errors).
    pub fn forward(&self, batch: ClassificationBatch<M::Input>) -> ClassificationOutput {
        let logits = self
            .model
            .classification_logits(&self.head, batch.input)
            .unwrap_or_else(|e| panic!("a batch the model cannot run: {e}"));
        let loss = cross_entropy(logits.clone(), batch.labels.clone());
        ClassificationOutput::new(loss, logits, batch.labels)
    }
}

impl<M: Classify + Module> TrainStep for AdapterClassifier<M> {
    type Input = ClassificationBatch<M::Input>;
    type Output = ClassificationOutput;

    fn step(&self, batch: Self::Input) -> TrainOutput<ClassificationOutput> {
        let output = self.forward(batch);
        let loss = output.loss.clone() / self.devices as f32;
        TrainOutput::new(self, loss.backward(), output)
    }
}

impl<M: Classify + Module> InferenceStep for AdapterClassifier<M> {
    type Input = ClassificationBatch<M::Input>;
    type Output = ClassificationOutput;

    fn step(&self, batch: Self::Input) -> ClassificationOutput {
        self.forward(batch)
    }
}
