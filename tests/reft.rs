//! ReFT (LoReFT, NoReFT, DiReFT) against AdapterHub (`tools/gen_fixtures_reft.py`) on BERT, Llama
//! and GPT-2: outputs, parameter counts, cached generation, files both ways, training and bad
//! configs.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use burn_adapters::generation::CausalLm;
use burn_adapters::models::bert::BertModel;
use burn_adapters::models::gpt2::Gpt2Model;
use burn_adapters::models::llama::LlamaModel;
use burn_adapters::prelude::*;
use common::decoder::*;
use common::families::{Family, deviation, export_dir, generates_as_reference, save_and_reload};
use common::snapshot::snapshot;
use common::*;

const TOLERANCE: f64 = 1e-5;

fn family_dir<F: Family>() -> PathBuf {
    fixtures().join("reft").join(F::NAME)
}

fn cases<F: Family>() -> Vec<(String, serde_json::Value, PathBuf)> {
    let listed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(family_dir::<F>().join("cases.json")).unwrap(),
    )
    .unwrap();
    case_dirs(&format!("reft/{}", F::NAME))
        .into_iter()
        .map(|dir| {
            let name = dir.file_name().unwrap().to_str().unwrap().to_string();
            let case = listed
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name.as_str());
            (name, case.unwrap().clone(), dir)
        })
        .collect()
}

fn interventions_match_adapterhub<F: Family>() {
    let device = device();
    for (name, case, dir) in cases::<F>() {
        let mut model = F::base(&device);
        model.load_adapter(&dir).unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
        let expected = dir.join("expected.safetensors");
        let d = deviation::<F>(model.output(&device), &expected, F::OUTPUT, &device);
        println!("{} {name}: max |Δ| {d:.2e}", F::NAME);
        assert!(d <= TOLERANCE, "{} {name}: max |Δ| {d}", F::NAME);
        let params = model.adapter_summary().adapters[0].num_params as u64;
        assert_eq!(params, case["num_params"].as_u64().unwrap(), "{name}");
    }
}

#[test]
fn bert_interventions_match_adapterhub() {
    interventions_match_adapterhub::<BertModel>();
}

#[test]
fn llama_interventions_match_adapterhub() {
    interventions_match_adapterhub::<LlamaModel>();
}

#[test]
fn gpt2_interventions_match_adapterhub() {
    interventions_match_adapterhub::<Gpt2Model>();
}

/// Prefix positions are fixed positions of the sequence, so cached greedy generation equals
/// transformers + adapters recomputing every step (the fixtures' `generated`; cases with
/// suffix positions have none: their positions move with every new token).
fn generation_matches_recompute<F: Family + CausalLm>() {
    let device = device();
    for (_, case, dir) in cases::<F>() {
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
    for (name, case, dir) in cases::<F>() {
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
    let export = std::env::var_os("BURN_ADAPTERS_EXPORT_REFT").map(PathBuf::from);
    let scratch = tempfile::tempdir().unwrap();
    let root = export.unwrap_or_else(|| scratch.path().to_path_buf());
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
    let moved: Vec<String> = snapshot(&model)
        .into_iter()
        .filter(|(path, values)| before.get(path) != Some(values))
        .map(|(path, _)| path)
        .collect();
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
