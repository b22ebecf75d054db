//! Training on burn-train's `Learner` with one worker against its multi-device strategy with
//! two workers, on the same global batches (feature `train`): one iteration is an epoch of
//! `STEPS` steps of `train_adapter(seq_bn)` on the MiniLM-L6 shape, global batch 8 × 128 (two
//! workers: 4 × 128 each, gradients divided by two and summed). On the flex device both
//! workers share the CPU's cores.
//!
//! ```text
//! cargo bench --features train --bench learner
//! ```

mod common;

use std::sync::Arc;

use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::tensor::Device;
use burn::train::logger::InMemoryMetricLogger;
use burn::train::metric::LossMetric;
use burn::train::{ExecutionStrategy, Learner, MultiDeviceOptim, SupervisedTraining};
use burn_adapters::heads::HeadConfig;
use burn_adapters::models::bert::{BertInput, BertModel};
use burn_adapters::prelude::*;
use burn_adapters::train::TrainingConfig;
use burn_adapters::train::learner::{
    AdapterClassifier, ClassificationBatch, ClassificationBatcher, ClassificationDataset,
    ClassificationExample,
};
use common::{device_with, shapes};
use criterion::{Criterion, criterion_group, criterion_main};

const STEPS: usize = 4;
const GLOBAL_BATCH: usize = 8;

type Loader = Arc<dyn DataLoader<ClassificationBatch<BertInput>>>;

fn loader(data: ClassificationDataset, batch: usize, device: &Device) -> Loader {
    DataLoaderBuilder::new(ClassificationBatcher::<BertModel>::new(0))
        .batch_size(batch)
        .set_device(device.clone())
        .build(data)
}

fn epoch(classifier: &AdapterClassifier<BertModel>, data: &ClassificationDataset, workers: usize) {
    let device = device_with(true);
    let batch = GLOBAL_BATCH / workers;
    let valid = ClassificationDataset::new(
        classifier,
        vec![ClassificationExample::new(vec![101, 102], 0)],
    );
    let mut training = SupervisedTraining::new(
        std::env::temp_dir(),
        loader(data.clone(), batch, &device),
        loader(valid.unwrap(), 1, &device),
    )
    .metric_train_numeric(LossMetric::new())
    .with_application_logger(None)
    .with_metric_logger(InMemoryMetricLogger::default())
    .num_epochs(1);
    let mut model = classifier.clone();
    if workers > 1 {
        let devices = vec![device.clone(); workers];
        training = training.with_training_strategy(
            ExecutionStrategy::multi(devices, MultiDeviceOptim::OptimMainDevice).into(),
        );
        model = model.with_devices(workers).unwrap();
    }
    let learner = Learner::new(model, TrainingConfig::new().optimizer(), 1e-3);
    let result = training.launch(learner);
    assert!(result.error.is_none(), "{:?}", result.error);
}

fn learner(c: &mut Criterion) {
    let device = device_with(true);
    let shape = shapes().into_iter().find(|s| s.name == "minilm").unwrap();
    device.seed(0);
    let mut model = shape.config.init(&device).unwrap();
    model.add_adapter("task", BnConfig::seq_bn()).unwrap();
    model
        .add_head("task", HeadConfig::mean_pooled_linear(2))
        .unwrap();
    model.train_adapter("task").unwrap();
    let classifier = AdapterClassifier::new(model, "task").unwrap();
    let examples = (0..STEPS * GLOBAL_BATCH)
        .map(|i| {
            let tokens = (0..128)
                .map(|j| ((i * 131 + j * 17) % 29000 + 1000) as u32)
                .collect();
            ClassificationExample::new(tokens, i % 2)
        })
        .collect();
    let data = ClassificationDataset::new(&classifier, examples).unwrap();
    let mut group = c.benchmark_group(format!("learner epoch of {STEPS} steps minilm 8x128"));
    group.sample_size(10);
    for workers in [1, 2] {
        group.bench_function(format!("{workers} worker(s)"), |b| {
            b.iter(|| epoch(&classifier, &data, workers))
        });
    }
    group.finish();
}

criterion_group!(benches, learner);
criterion_main!(benches);
