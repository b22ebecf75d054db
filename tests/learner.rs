//! Adapter training on burn-train's `Learner` (feature `train`): what trains, against the
//! crate's own loop, across two devices, and the inputs it refuses.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::module::Module;
use burn::tensor::Device;
use burn::train::logger::InMemoryMetricLogger;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{ExecutionStrategy, Learner, MultiDeviceOptim, SupervisedTraining};
use burn_adapters::heads::HeadConfig;
use burn_adapters::models::bert::{BertConfig, BertInput, BertModel};
use burn_adapters::prelude::*;
use burn_adapters::train::checkpoint::AdapterCheckpointer;
use burn_adapters::train::learner::{
    AdapterClassifier, ClassificationBatch, ClassificationBatcher, ClassificationDataset,
    ClassificationExample,
};
use burn_adapters::train::{Trainer, TrainingConfig, cross_entropy};
use common::snapshot::{snapshot, trainable};

const LEARNING_RATE: f64 = 1e-2;

/// A tiny BERT without dropout (runs must be comparable) with a trainable `seq_bn` and head.
fn classifier(device: &Device) -> AdapterClassifier<BertModel> {
    let mut config = BertConfig::tiny();
    config.hidden_dropout_prob = 0.0;
    config.attention_probs_dropout_prob = 0.0;
    let mut model = config.init(device).unwrap();
    model.add_adapter("task", BnConfig::seq_bn()).unwrap();
    model
        .add_head("task", HeadConfig::classification(3))
        .unwrap();
    model.train_adapter("task").unwrap();
    AdapterClassifier::new(model, "task").unwrap()
}

/// `count` rows of `len` tokens, labels cycling through the three classes.
fn examples(count: usize, len: usize) -> Vec<ClassificationExample> {
    (0..count)
        .map(|i| {
            let tokens = (0..len)
                .map(|j| ((i * 7 + j * 3) % 90 + 5) as u32)
                .collect();
            ClassificationExample::new(tokens, i % 3)
        })
        .collect()
}

type Loader = Arc<dyn DataLoader<ClassificationBatch<BertInput>>>;

fn loader(data: ClassificationDataset, batch: usize, device: &Device) -> Loader {
    DataLoaderBuilder::new(ClassificationBatcher::<BertModel>::new(0))
        .batch_size(batch)
        .set_device(device.clone())
        .build(data)
}

/// `epochs` epochs on the Learner, in order, at a constant learning rate.
fn training(train: Loader, valid: Loader, epochs: usize) -> Training {
    SupervisedTraining::new(std::env::temp_dir(), train, valid)
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(AccuracyMetric::new())
        .with_application_logger(None)
        .with_metric_logger(InMemoryMetricLogger::default())
        .num_epochs(epochs)
}

type Training = SupervisedTraining<AdapterClassifier<BertModel>>;

fn launch(
    training: Training,
    classifier: AdapterClassifier<BertModel>,
) -> AdapterClassifier<BertModel> {
    let optimizer = TrainingConfig::new().optimizer();
    let result = training.launch(Learner::new(classifier, optimizer, LEARNING_RATE));
    assert!(result.error.is_none(), "{:?}", result.error);
    result.model
}

/// One epoch on the Learner.
fn fit(
    classifier: AdapterClassifier<BertModel>,
    train: Loader,
    valid: Loader,
    strategy: Option<ExecutionStrategy>,
) -> AdapterClassifier<BertModel> {
    let mut training = training(train, valid, 1);
    if let Some(strategy) = strategy {
        training = training.with_training_strategy(strategy.into());
    }
    launch(training, classifier)
}

fn max_difference(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>) -> f32 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut most = 0.0f32;
    for (x, y) in a.values().zip(b.values()) {
        for (p, q) in x.iter().zip(y) {
            let d = (p - q).abs();
            assert!(!d.is_nan(), "NaN in a parameter");
            most = most.max(d);
        }
    }
    most
}

#[test]
fn learner_trains_the_adapter_and_head_as_the_crate_loop_does() {
    let device = Device::flex().autodiff();
    let start = classifier(&device);
    let before = snapshot(start.model());
    let trains = trainable(start.model());
    let data = ClassificationDataset::new(&start, examples(24, 6)).unwrap();
    let result = fit(
        start.clone(),
        loader(data.clone(), 8, &device),
        loader(data, 8, &device),
        None,
    );
    let after = snapshot(result.model());

    assert!(trains.iter().any(|p| p.contains("adapters.task")));
    assert!(trains.iter().any(|p| p.starts_with("heads.task")));
    for (path, values) in &before {
        let changed = values != &after[path];
        assert_eq!(changed, trains.contains(path), "{path}: changed {changed}");
    }

    // The same three batches through the crate's own loop give bit-identical parameters.
    let mut model = start.into_model();
    let mut trainer = Trainer::new(&TrainingConfig::new().with_learning_rate(LEARNING_RATE), 3);
    let rows = examples(24, 6);
    let batcher = ClassificationBatcher::<BertModel>::new(0);
    for batch in rows.chunks(8) {
        let batch: ClassificationBatch<BertInput> =
            burn::data::dataloader::batcher::Batcher::batch(&batcher, batch.to_vec(), &device);
        let logits = model.classify("task", batch.input).unwrap();
        model = trainer.step(model, cross_entropy(logits, batch.labels));
    }
    let difference = max_difference(&snapshot(&model), &after);
    eprintln!("Learner against Trainer: max |Δ| {difference:e}");
    assert_eq!(difference, 0.0, "Learner against Trainer");
}

#[test]
fn two_devices_train_like_one_on_the_global_batch() {
    let device = Device::flex().autodiff();
    let start = classifier(&device);
    let rows = examples(32, 5);
    // burn-train gives each device a contiguous half of the data, and one step takes a batch
    // from each; the single device sees the union of each pair as one batch.
    let (first, second) = rows.split_at(16);
    let global: Vec<_> = first
        .chunks(4)
        .zip(second.chunks(4))
        .flat_map(|(a, b)| a.iter().chain(b).cloned())
        .collect();
    let valid = || {
        loader(
            ClassificationDataset::new(&start, rows[..8].to_vec()).unwrap(),
            8,
            &device,
        )
    };

    let data = ClassificationDataset::new(&start, global).unwrap();
    let single = fit(start.clone(), loader(data, 8, &device), valid(), None);
    let data = ClassificationDataset::new(&start, rows.clone()).unwrap();
    let devices = vec![device.clone(), device.clone()];
    let strategy = ExecutionStrategy::multi(devices, MultiDeviceOptim::OptimMainDevice);
    let parallel = start.clone().with_devices(2).unwrap();
    let multi = fit(parallel, loader(data, 4, &device), valid(), Some(strategy));
    let single = snapshot(single.model());
    let multi = snapshot(multi.model());
    assert_ne!(single, snapshot(start.model()));
    // Each device's gradient is halved (`with_devices(2)`) and burn-train sums them: the mean
    // gradient of the global batch, summed in another order.
    let difference = max_difference(&single, &multi);
    eprintln!("two devices against one: max |Δ| {difference:e}");
    assert!(difference <= 1e-5, "two devices against one: {difference}");
}

#[test]
fn examples_the_model_cannot_run_are_refused_naming_the_example() {
    let device = Device::flex().autodiff();
    let classifier = classifier(&device);
    let refused = |rows: Vec<ClassificationExample>| {
        ClassificationDataset::new(&classifier, rows)
            .unwrap_err()
            .to_string()
    };
    let mut rows = examples(4, 3);
    rows[2].token_ids[1] = 99;
    assert!(refused(rows).contains("examples[2].token_ids"));
    let mut rows = examples(4, 3);
    rows[1].label = 3;
    assert!(refused(rows).contains("examples[1].label"));
    let mut rows = examples(4, 3);
    rows[3].token_ids.clear();
    assert!(refused(rows).contains("examples[3].token_ids"));
    assert!(refused(examples(2, 513)).contains("examples[0].token_ids"));

    let error = classifier.clone().with_devices(0).unwrap_err();
    assert!(error.to_string().contains("devices"), "{error}");
    let mut model = classifier.into_model();
    assert!(matches!(
        AdapterClassifier::new(model.clone(), "missing"),
        Err(Error::UnknownHead(_))
    ));
    model.add_head("tags", HeadConfig::tagging(2)).unwrap();
    let error = AdapterClassifier::new(model, "tags").unwrap_err();
    assert!(error.to_string().contains("tags"), "{error}");
}

#[test]
fn decoders_pad_on_the_left() {
    use burn::data::dataloader::batcher::Batcher;
    use burn_adapters::models::llama::LlamaModel;
    let device = Device::flex();
    let rows = vec![
        ClassificationExample::new(vec![5, 6, 7], 0),
        ClassificationExample::new(vec![8], 1),
    ];
    let batch = ClassificationBatcher::<LlamaModel>::new(0).batch(rows.clone(), &device);
    let ids = batch
        .input
        .input_ids
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap();
    assert_eq!(ids, [5, 6, 7, 0, 0, 8]);
    let batch = ClassificationBatcher::<BertModel>::new(0).batch(rows, &device);
    let mask = batch
        .input
        .attention_mask
        .unwrap()
        .into_data()
        .convert::<i64>();
    assert_eq!(mask.try_to_vec::<i64>().unwrap(), [1, 1, 1, 1, 0, 0]);
    let labels = batch
        .labels
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .unwrap();
    assert_eq!(labels, [0, 1]);
}

/// The training data of the checkpoint tests, and their validation loader.
fn checkpoint_data(classifier: &AdapterClassifier<BertModel>, device: &Device) -> (Loader, Loader) {
    let data = ClassificationDataset::new(classifier, examples(16, 6)).unwrap();
    (loader(data.clone(), 8, device), loader(data, 8, device))
}

/// Trains `epochs` epochs with checkpoints in `dir`, resuming after `resume_from` if given.
fn checkpointed(
    start: &AdapterClassifier<BertModel>,
    dir: &std::path::Path,
    epochs: usize,
    resume_from: Option<usize>,
) -> AdapterClassifier<BertModel> {
    let device = Device::flex().autodiff();
    let (train, valid) = checkpoint_data(start, &device);
    let checkpoints = AdapterCheckpointer::new(start, dir).unwrap();
    let training = checkpoints
        .install(training(train, valid, epochs), resume_from)
        .unwrap();
    launch(training, start.clone())
}

#[test]
fn checkpoint_then_resume_continues_bit_identically() {
    let device = Device::flex().autodiff();
    let start = classifier(&device);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let uninterrupted = snapshot(checkpointed(&start, dirs[0].path(), 3, None).model());

    checkpointed(&start, dirs[1].path(), 1, None);
    let mut files: Vec<String> = std::fs::read_dir(dirs[1].path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["adapter-1", "optim-1.bpk", "scheduler-1.bpk"]);
    // The adapter and head, as AdapterHub saves them; nothing of the frozen base.
    let mut model = BertConfig::tiny().init(&device).unwrap();
    assert_eq!(
        model
            .load_adapter(dirs[1].path().join("adapter-1"))
            .unwrap(),
        "task"
    );
    assert!(model.has_head("task"));

    let resumed = snapshot(checkpointed(&start, dirs[1].path(), 3, Some(1)).model());
    assert_ne!(resumed, snapshot(start.model()));
    assert_eq!(
        max_difference(&resumed, &uninterrupted),
        0.0,
        "resumed against uninterrupted"
    );
}

#[test]
fn missing_corrupt_or_foreign_checkpoints_are_refused_before_training() {
    let device = Device::flex().autodiff();
    let start = classifier(&device);
    let dir = tempfile::tempdir().unwrap();
    checkpointed(&start, dir.path(), 1, None);
    let checkpoints = AdapterCheckpointer::new(&start, dir.path()).unwrap();
    checkpoints.check_resume(1).unwrap();
    let error = checkpoints.check_resume(2).unwrap_err().to_string();
    assert!(error.contains("adapter-2"), "{error}");

    // Another adapter's checkpoint, and the same name with another config.
    let mut other = start.model().clone();
    other.add_adapter("other", BnConfig::seq_bn()).unwrap();
    other
        .add_head("other", HeadConfig::classification(3))
        .unwrap();
    let other = AdapterClassifier::new(other, "other").unwrap();
    let error = AdapterCheckpointer::new(&other, dir.path())
        .unwrap()
        .check_resume(1)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("a checkpoint of adapter `task`, not `other`"),
        "{error}"
    );
    let mut lora = classifier(&device).into_model();
    lora.delete_adapter("task").unwrap();
    lora.add_adapter("task", AdapterConfig::load("lora").unwrap())
        .unwrap();
    let lora = AdapterClassifier::new(lora, "task").unwrap();
    let error = AdapterCheckpointer::new(&lora, dir.path())
        .unwrap()
        .check_resume(1)
        .unwrap_err()
        .to_string();
    assert!(error.contains("another config"), "{error}");

    // A head without an adapter of its name cannot be checkpointed in AdapterHub's files.
    let mut headless = start.model().clone();
    headless
        .add_head("tags", HeadConfig::classification(2))
        .unwrap();
    let headless = AdapterClassifier::new(headless, "tags").unwrap();
    assert!(AdapterCheckpointer::new(&headless, dir.path()).is_err());

    // Truncated files: the optimiser's moments, then the adapter's weights.
    let optim = dir.path().join("optim-1.bpk");
    let bytes = std::fs::read(&optim).unwrap();
    std::fs::write(&optim, &bytes[..bytes.len() / 2]).unwrap();
    let error = checkpoints.check_resume(1).unwrap_err().to_string();
    assert!(error.contains("optim-1.bpk"), "{error}");
    let (train, valid) = checkpoint_data(&start, &device);
    let refused = AdapterCheckpointer::new(&start, dir.path())
        .unwrap()
        .install(training(train, valid, 2), Some(1));
    assert!(refused.is_err());
    std::fs::write(&optim, &bytes).unwrap();
    checkpoints.check_resume(1).unwrap();
    let weights = std::fs::read_dir(dir.path().join("adapter-1"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.to_string_lossy().ends_with("adapter.safetensors"))
        .unwrap();
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() - 9]).unwrap();
    let error = checkpoints.check_resume(1).unwrap_err().to_string();
    assert!(error.contains("adapter.safetensors"), "{error}");
}

#[test]
fn gradient_checkpointing_trains_the_same_parameters() {
    let device = Device::flex().autodiff();
    let start = classifier(&device);
    let data = ClassificationDataset::new(&start, examples(16, 7)).unwrap();
    let plain = launch(
        training(
            loader(data.clone(), 8, &device),
            loader(data.clone(), 8, &device),
            1,
        ),
        start.clone(),
    );
    // burn-train forks the model to its checkpointing device, but a fork keeps a frozen
    // parameter's strategy: the model must be built on that device.
    // (Its weights are `start`'s: a seeded init would race with the other tests' draws from the
    // device's generator.)
    let checkpointing = device.clone().gradient_checkpointing();
    let copy = classifier(&checkpointing).load_record(start.clone().into_record());
    assert_eq!(snapshot(copy.model()), snapshot(start.model()));
    let checkpointed = launch(
        training(
            loader(data.clone(), 8, &checkpointing),
            loader(data, 8, &checkpointing),
            1,
        )
        .gradient_checkpointing(),
        copy,
    );
    let plain = snapshot(plain.model());
    assert_ne!(plain, snapshot(start.model()));
    let difference = max_difference(&plain, &snapshot(checkpointed.model()));
    eprintln!("checkpointed against plain: max |Δ| {difference:e}");
    assert_eq!(difference, 0.0, "checkpointed against plain");
}
