//! Compacter and Compacter++ (PHM projections) against AdapterHub
//! (`tools/gen_fixtures_compacter.py`) on BERT, Llama and GPT-2: outputs, parameter counts,
//! cached generation, files both ways, training and bad configs.

mod common;

use burn::tensor::Device;
use burn_adapters::models::bert::BertModel;
use burn_adapters::models::gpt2::Gpt2Model;
use burn_adapters::models::llama::LlamaModel;
use burn_adapters::prelude::*;
use common::decoder::*;
use common::families::{
    Family, cases_match_reference, export_root, generates_as_reference, listed_cases, moved,
    rust_saved_cases_reload,
};
use common::snapshot::{snapshot, trainable};
use common::*;

const TOLERANCE: f64 = 1e-5;
const BERT_CASES: usize = 2;
const LLAMA_CASES: usize = 1;
const GPT2_CASES: usize = 1;

#[test]
fn presets_match_adapterhubs() {
    let presets: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("compacter/presets.json")).unwrap(),
    )
    .unwrap();
    for (name, expected) in presets.as_object().unwrap() {
        let ours = AdapterConfig::from(BnConfig::preset(name).unwrap());
        assert_eq!(&ours.to_json(), expected, "{name}");
    }
    assert_eq!(BnConfig::preset("compacter"), Some(BnConfig::compacter()));
    assert_eq!(
        BnConfig::preset("compacter++"),
        Some(BnConfig::compacter_plus_plus())
    );
}

#[test]
fn bert_compacter_matches_adapterhub() {
    cases_match_reference::<BertModel>("compacter", BERT_CASES, TOLERANCE, &device());
}

#[test]
fn llama_compacter_matches_adapterhub() {
    cases_match_reference::<LlamaModel>("compacter", LLAMA_CASES, TOLERANCE, &device());
}

#[test]
fn gpt2_compacter_matches_adapterhub() {
    cases_match_reference::<Gpt2Model>("compacter", GPT2_CASES, TOLERANCE, &device());
}

#[test]
fn generation_with_compacter_matches_transformers() {
    let device = device();
    for (_, _, dir) in listed_cases::<LlamaModel>("compacter", LLAMA_CASES) {
        generates_as_reference::<LlamaModel>(&dir, &device);
    }
    for (_, _, dir) in listed_cases::<Gpt2Model>("compacter", GPT2_CASES) {
        generates_as_reference::<Gpt2Model>(&dir, &device);
    }
}

/// Rust-saved files reload the same; under `BURN_ADAPTERS_EXPORT_COMPACTER` they go to
/// `<dir>/bert/<case>` and `<dir>/decoder/<family>/<case>` for the Python checkers.
#[test]
fn rust_saved_compacters_reload_exactly() {
    let (_scratch, root) = export_root("BURN_ADAPTERS_EXPORT_COMPACTER");
    let device = device();
    rust_saved_cases_reload::<BertModel>("compacter", BERT_CASES, &root, &device);
    rust_saved_cases_reload::<LlamaModel>("compacter", LLAMA_CASES, &root, &device);
    rust_saved_cases_reload::<Gpt2Model>("compacter", GPT2_CASES, &root, &device);
}

/// Training moves the weights, biases and rules of the PHM projections; with `learn_phm` false
/// the rules stay where they started, even with the whole model unfrozen.
#[test]
fn training_moves_the_phm_layers_and_keeps_a_fixed_rule() {
    let device = Device::flex().autodiff();
    let base = || LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), &device);
    for (learn, parts) in [
        (true, &["weight.Factorized", "rule.Full", "bias"][..]),
        (false, &["weight.Factorized", "bias"][..]),
    ] {
        let mut model = base().unwrap();
        let config = format!(
            "compacter++[reduction_factor=8,shared_phm_rule=False,learn_phm={}]",
            if learn { "True" } else { "False" }
        );
        model
            .add_adapter("c", AdapterConfig::load(&config).unwrap())
            .unwrap();
        let rules_train = trainable(&model).iter().any(|p| p.contains(".rule."));
        assert_eq!(rules_train, learn, "{config} as added");
        model.train_adapter("c").unwrap();
        let before = snapshot(&model);
        let (model, losses) = train_steps(model, |m, input| m.forward(input), &device);
        assert!(losses.last() < losses.first(), "{config}: {losses:?}");
        let moved = moved(&before, &model);
        for path in &moved {
            assert!(path.contains(".c."), "{config}: {path} moved");
            assert!(learn || !path.contains(".rule."), "{config}: {path} moved");
        }
        for part in parts {
            assert!(moved.iter().any(|p| p.contains(part)), "{part}: {moved:?}");
        }
    }
    let mut model = base().unwrap();
    let config = "compacter[reduction_factor=8,shared_phm_rule=False,learn_phm=False]";
    model
        .add_adapter("c", AdapterConfig::load(config).unwrap())
        .unwrap();
    model.freeze_model(false);
    let trainable = trainable(&model);
    assert!(
        trainable
            .iter()
            .any(|p| p.contains(".c.") && p.contains(".weight."))
    );
    assert!(
        !trainable.iter().any(|p| p.contains(".rule.")),
        "{trainable:?}"
    );
}

#[test]
fn bad_compacter_configs_are_errors_naming_the_field() {
    configs_refused_naming_the_field(&[
        ("compacter[shared_phm_rule=False,phm_dim=0]", "phm_dim"),
        ("compacter[shared_phm_rule=False,phm_rank=0]", "phm_rank"),
        (
            "compacter[shared_phm_rule=False,init_weights=houlsby]",
            "init_weights",
        ),
        (
            "compacter[shared_phm_rule=False,phm_init_range=-1]",
            "phm_init_range",
        ),
        (
            "compacter[shared_phm_rule=False,phm_c_init=zeros]",
            "phm_c_init",
        ),
    ]);
    for spec in [
        "compacter",
        "compacter[shared_phm_rule=False,shared_W_phm=True]",
    ] {
        let err = AdapterConfig::load(spec).unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{spec}: {err}");
    }
    // the tiny BERT's width 32 / 32 leaves a bottleneck of 1, which phm_dim 4 cannot split
    let device = device();
    let mut bert = BertModel::base(&device);
    let config = AdapterConfig::load("compacter[shared_phm_rule=False]").unwrap();
    let err = bert.add_adapter("c", config).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { field, .. } if field == "phm_dim"),
        "{err}"
    );
    assert!(!bert.has_adapter("c"));
}
