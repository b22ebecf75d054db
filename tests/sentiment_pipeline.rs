//! The sentiment example's pipeline on a tiny random model and a few synthetic rows: the loss
//! decreases, and a saved adapter + head reloads with identical predictions.

#[path = "../examples/sentiment/pipeline.rs"]
mod pipeline;

use burn::tensor::Device;
use burn_adapters::heads::HeadConfig;
use burn_adapters::models::bert::BertConfig;
use burn_adapters::prelude::*;
use burn_adapters::train::TrainingConfig;
use pipeline::{Example, evaluate, fit};

/// Label 1 rows contain token 50, label 0 rows token 60, among random filler.
fn rows(n: usize, seed: u64) -> Vec<Example> {
    let mut state = seed;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as i64
    };
    (0..n)
        .map(|i| {
            let label = i % 2;
            let len = 4 + (next() % 5) as usize;
            let mut ids: Vec<i64> = (0..len).map(|_| 5 + next() % 40).collect();
            ids[1 + (next() as usize % (len - 1))] = if label == 1 { 50 } else { 60 };
            ids.insert(0, 2);
            ids.push(3);
            Example { ids, label }
        })
        .collect()
}

#[test]
fn pipeline_learns_and_reloads_identically() {
    let device = Device::flex().autodiff();
    device.seed(5);
    let mut model = BertConfig::tiny().init(&device).unwrap();
    let base = model.clone();
    model
        .add_adapter(
            "task",
            AdapterConfig::load("pfeiffer[reduction_factor=4]").unwrap(),
        )
        .unwrap();
    model
        .add_head("task", HeadConfig::mean_pooled_linear(2))
        .unwrap();
    model.train_adapter("task").unwrap();

    let (train, test) = (rows(64, 1), rows(32, 2));
    let config = TrainingConfig::new().with_learning_rate(5e-3);
    let (model, logs) = fit(
        model,
        "task",
        &train,
        &test,
        6,
        16,
        0,
        &config,
        &device,
        |_, _| {},
    )
    .unwrap();
    let first = logs.first().unwrap().train_loss;
    let last = logs.last().unwrap().train_loss;
    assert!(
        last < first * 0.9,
        "the loss must decrease: {first} → {last}"
    );

    let (accuracy, predictions) = evaluate(&model, "task", &test, 8, &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save_adapter(dir.path(), "task").unwrap();
    assert!(
        dir.path().join("head_config.json").is_file()
            && dir.path().join("model_head.safetensors").is_file()
    );
    let mut reloaded = base;
    assert_eq!(reloaded.load_adapter(dir.path()).unwrap(), "task");
    assert!(reloaded.has_head("task"));
    reloaded.set_active_adapters("task").unwrap();
    let (reloaded_accuracy, reloaded_predictions) =
        evaluate(&reloaded, "task", &test, 8, &device).unwrap();
    assert_eq!(predictions, reloaded_predictions);
    assert_eq!(accuracy, reloaded_accuracy);
}
