//! ReFT (LoReFT, NoReFT, DiReFT) against AdapterHub (`tools/gen_fixtures_reft.py`) on BERT, Llama
//! and GPT-2: outputs, parameter counts, cached generation, files both ways, training and bad
//! configs.

mod common;

use std::path::Path;

use burn::tensor::Device;
use burn_adapters::generation::CausalLm;
use burn_adapters::models::bert::BertModel;
use burn_adapters::models::gpt2::Gpt2Model;
use burn_adapters::models::llama::LlamaModel;
use burn_adapters::prelude::*;
use common::decoder::*;
use common::families::{
    Family, cases_match_reference, export_dir, export_root, generates_as_reference, listed_cases,
    moved, save_and_reload,
};
use common::snapshot::snapshot;
use common::*;

const TOLERANCE: f64 = 1e-5;

const CASES: usize = 5;

#[test]
fn bert_interventions_match_adapterhub() {
    cases_match_reference::<BertModel>("reft", CASES, TOLERANCE, &device());
}

#[test]
fn llama_interventions_match_adapterhub() {
    cases_match_reference::<LlamaModel>("reft", CASES, TOLERANCE, &device());
}

#[test]
fn gpt2_interventions_match_adapterhub() {
    cases_match_reference::<Gpt2Model>("reft", CASES, TOLERANCE, &device());
}

/// Prefix positions are fixed positions of the sequence, so cached greedy generation equals
/// transformers + adapters recomputing every step (the fixtures' `generated`; cases with
/// suffix positions have none: their positions move with every new token).
fn generation_matches_recompute<F: Family + CausalLm>() {
    let device = device();
    for (_, case, dir) in listed_cases::<F>("reft", CASES) {
        if !case["config"]
            .as_str()
            .unwrap()
            .contains("suffix_positions")
        {
            generates_as_reference::<F>(&dir, &device);
        }
    }
}

#[test]
fn llama_generation_with_reft_matches_transformers() {
    generation_matches_recompute::<LlamaModel>();
}

#[test]
fn gpt2_generation_with_reft_matches_transformers() {
    generation_matches_recompute::<Gpt2Model>();
}

/// Rust-saved files reload the same; under `BURN_ADAPTERS_EXPORT_REFT` they go to
/// `<dir>/bert/<case>` and `<dir>/decoder/<family>/<case>` for the Python checkers (without
/// DiReFT, which adapters 1.3.0 reloads as NoReFT whatever the file says).
fn rust_saved_files_reload_exactly<F: Family>(root: &Path) {
    let device = device();
    let scratch = tempfile::tempdir().unwrap();
    for (name, case, dir) in listed_cases::<F>("reft", CASES) {
        let mut model = F::base(&device);
        model.load_adapter(&dir).unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
        let direft = case["config"].as_str().unwrap().starts_with("direft");
        let out = match direft {
            true => scratch.path().join(&name),
            false => export_dir::<F>(root).join(&name),
        };
        save_and_reload(&model, &name, &out, &device);
    }
}

#[test]
fn rust_saved_refts_reload_exactly() {
    let (_scratch, root) = export_root("BURN_ADAPTERS_EXPORT_REFT");
    rust_saved_files_reload_exactly::<BertModel>(&root);
    rust_saved_files_reload_exactly::<LlamaModel>(&root);
    rust_saved_files_reload_exactly::<Gpt2Model>(&root);
}

/// Training moves the interventions' sources and the orthogonal projections' free parameters,
/// never their bases (buffers in torch) or the model.
#[test]
fn training_moves_only_the_intervention() {
    let device = Device::flex().autodiff();
    let mut model =
        LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), &device).unwrap();
    model
        .add_adapter("r", AdapterConfig::load("loreft[r=2,dropout=0.0]").unwrap())
        .unwrap();
    model.train_adapter("r").unwrap();
    let before = snapshot(&model);
    let (model, losses) = train_steps(model, |m, input| m.forward(input), &device);
    assert!(losses.last() < losses.first(), "{losses:?}");
    let moved = moved(&before, &model);
    assert!(!moved.is_empty());
    for path in &moved {
        assert!(
            path.contains(".r.units.") && !path.ends_with(".base"),
            "{path} moved"
        );
    }
    assert!(
        moved.iter().any(|p| p.ends_with("Orthogonal.original")),
        "{moved:?}"
    );
}

#[test]
fn bad_reft_configs_and_setups_are_errors() {
    for (spec, field) in [
        ("loreft[r=0]", "r"),
        ("loreft[prefix_positions=0]", "prefix_positions"),
        ("loreft[layers=\"some\"]", "layers"),
        ("loreft[dropout=2.0]", "dropout"),
    ] {
        let err = AdapterConfig::load(spec).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { field: f, .. } if f == field),
            "{spec}: {err}"
        );
    }
    let device = device();
    let mut model = base_model(&device);
    let err = model
        .add_adapter("r", AdapterConfig::load("loreft[layers=[0, 2]]").unwrap())
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { field, .. } if field == "layers"),
        "{err}"
    );
    model
        .add_adapter("r", AdapterConfig::load("loreft").unwrap())
        .unwrap();
    model.add_adapter("b", BnConfig::seq_bn()).unwrap();
    for setup in ["Stack[b, r]", "Parallel[r, b]"] {
        let err = model.set_active_adapters(setup).unwrap_err();
        assert!(matches!(err, Error::InvalidSetup(_)), "{setup}: {err}");
    }
    model.set_active_adapters("Stack[r, b]").unwrap();
}

/// On burn's `TransformerEncoder` (one layer, no AdapterHub counterpart), the intervention is
/// the closed form at the prefix positions and nothing elsewhere.
#[test]
fn an_encoder_intervention_is_the_closed_form() {
    use burn::nn::transformer::TransformerEncoderConfig;
    use burn::tensor::{Distribution, Tensor};
    use burn_adapters::models::encoder::{AdapterTransformerEncoder, TransformerEncoderInput};
    let device = device();
    let encoder = TransformerEncoderConfig::new(16, 32, 4, 1)
        .with_dropout(0.0)
        .init(&device);
    let mut model = AdapterTransformerEncoder::from_encoder(encoder);
    let x = Tensor::<3>::random([2, 5, 16], Distribution::Normal(0.0, 1.0), &device);
    let plain = model.forward(TransformerEncoderInput::new(x.clone()));
    let config = AdapterConfig::load("noreft[r=2,prefix_positions=2,dropout=0.0]").unwrap();
    model.add_adapter("r", config).unwrap();
    model.set_active_adapters("r").unwrap();
    let out = model.forward(TransformerEncoderInput::new(x));
    let unit = &model
        .hidden_sites()
        .next()
        .unwrap()
        .refts()
        .get("r")
        .unwrap()
        .units[0];
    let h = plain.clone().narrow(1, 0, 2);
    let r = unit.projection.weight();
    let source = unit.learned_source.forward(h.clone())
        - h.clone().matmul(r.clone().transpose().unsqueeze());
    let expected = h + source.matmul(r.unsqueeze());
    let d = max_abs_diff_tensors(out.clone().narrow(1, 0, 2), expected);
    assert!(d <= 1e-5, "intervened positions: max |Δ| {d}");
    assert_eq!(values(out.narrow(1, 2, 3)), values(plain.narrow(1, 2, 3)));
}
