//! AdapterDrop: skipped layers against AdapterHub's `skip_layers`
//! (`tools/gen_fixtures_adapter_drop.py`), and the training helper.

mod common;

use burn::tensor::Device;
use burn_adapters::prelude::*;
use burn_adapters::train::AdapterDrop;
use common::*;

#[test]
fn skipped_layers_match_adapterhub() {
    let device = device();
    let root = fixtures().join("adapter_drop");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("cases.json")).unwrap()).unwrap();
    let base = base_model(&device);
    let base_out = values(base.forward(fixture_inputs(&device)).last_hidden_state);
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut model = base.clone();
        for dir in case["adapters"].as_array().unwrap() {
            model
                .load_adapter(fixtures().join(dir.as_str().unwrap()))
                .unwrap();
        }
        let skip: Vec<usize> = case["skip_layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_u64().unwrap() as usize)
            .collect();
        let setup = case["text"].as_str().unwrap();
        model.set_active_adapters_skipping(setup, &skip).unwrap();
        assert_eq!(model.registry().skip_layers(), skip.as_slice());
        let out = values(model.forward(fixture_inputs(&device)).last_hidden_state);
        let expected = read_tensor(
            &root.join(format!("{name}.safetensors")),
            "last_hidden_state",
        )
        .1;
        let d = max_abs_diff(&out, &expected);
        println!("{name}: max |Δ| {d:.2e}");
        assert!(d <= 1e-5, "{name}: max |Δ| {d}");

        // every layer skipped: exactly the base model
        model.set_active_adapters_skipping(setup, &[0, 1]).unwrap();
        let out = values(model.forward(fixture_inputs(&device)).last_hidden_state);
        assert_eq!(out, base_out, "{name}");
    }
}

#[test]
fn skip_layers_beyond_the_model_are_an_error_and_change_nothing() {
    let device = device();
    let mut model = base_model(&device);
    model.add_adapter("a", BnConfig::seq_bn()).unwrap();
    model.set_active_adapters("a").unwrap();
    let err = model.set_active_adapters_skipping("a", &[2]).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { field, .. } if field == "skip_layers"),
        "{err}"
    );
    assert!(model.registry().skip_layers().is_empty());
    let err = model
        .set_active_adapters_skipping("nope", &[0])
        .unwrap_err();
    assert!(matches!(err, Error::UnknownAdapter(_)), "{err}");
}

/// The helper draws from `0..=max_dropped` with its seed, skips the lower layers, and training
/// through it still moves only the adapter.
#[test]
fn adapter_drop_draws_reproducibly_and_trains() {
    use burn_adapters::models::bert::BertConfig;
    let device = Device::flex().autodiff();
    let mut model = BertConfig::tiny().init(&device).unwrap();
    model.add_adapter("a", BnConfig::seq_bn()).unwrap();
    model.train_adapter("a").unwrap();
    let draws = |seed| {
        let mut model = model.clone();
        let mut drop = AdapterDrop::new("a", 1, seed).unwrap();
        (0..16)
            .map(|_| drop.apply(&mut model).unwrap())
            .collect::<Vec<_>>()
    };
    let first = draws(3);
    assert_eq!(first, draws(3));
    assert!(first.contains(&0) && first.contains(&1), "{first:?}");
    let mut drop = AdapterDrop::new("a", 1, 3).unwrap();
    for _ in 0..4 {
        let dropped = drop.apply(&mut model).unwrap();
        assert_eq!(
            model.registry().skip_layers(),
            (0..dropped).collect::<Vec<_>>()
        );
    }
    let mut too_many = AdapterDrop::new("a", 3, 0).unwrap();
    assert!(
        (0..32).any(|_| too_many.apply(&mut model).is_err()),
        "the model has 2 layers"
    );
}
