//! LoRA and IA3: parity with AdapterHub fixtures, merge/reset, parameter counts, training
//! isolation, save/load, and the TransformerEncoder wrapper.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::nn::transformer::{TransformerEncoderConfig, TransformerEncoderInput};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Int, Tensor};
use burn_adapters::config::LoRAConfig;
use burn_adapters::models::bert::{BertConfig, BertInput, BertModel};
use burn_adapters::models::encoder::{
    AdapterTransformerEncoder, TransformerEncoderInput as AdapterInput,
};
use burn_adapters::prelude::*;
use common::snapshot::snapshot;
use common::*;

const TOLERANCE: f64 = 1e-5;

/// The fixture base model, with a case's `base_overrides.safetensors` applied if it has one.
fn case_base(case: &Path, device: &Device, scratch: &Path) -> BertModel {
    let overrides = case.join("base_overrides.safetensors");
    if !overrides.is_file() {
        return base_model(device);
    }
    let base_dir = fixtures().join("base");
    let base_bytes = std::fs::read(base_dir.join("model.safetensors")).unwrap();
    let over_bytes = std::fs::read(&overrides).unwrap();
    let base = safetensors::SafeTensors::deserialize(&base_bytes).unwrap();
    let over = safetensors::SafeTensors::deserialize(&over_bytes).unwrap();
    let mut tensors: BTreeMap<String, safetensors::tensor::TensorView> =
        base.tensors().into_iter().collect();
    for (key, view) in over.tensors() {
        assert!(tensors.contains_key(&key), "override of unknown {key}");
        tensors.insert(key, view);
    }
    let dir = scratch.join("base_with_overrides");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(base_dir.join("config.json"), dir.join("config.json")).unwrap();
    safetensors::serialize_to_file(tensors, None, &dir.join("model.safetensors")).unwrap();
    BertModel::from_pretrained(&dir, device).unwrap()
}

fn hidden(model: &BertModel, device: &Device) -> Vec<f32> {
    values(model.forward(fixture_inputs(device)).last_hidden_state)
}

fn expected(case: &Path, file: &str) -> Vec<f64> {
    read_tensor(&case.join(file), "last_hidden_state").1
}

/// The float parameters outside adapters (the base model), by path.
fn base_params(model: &BertModel) -> BTreeMap<String, Vec<f32>> {
    snapshot(model)
        .into_iter()
        .filter(|(path, _)| !path.contains(".loras.") && !path.contains(".adapters."))
        .collect()
}

fn max_param_diff(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>) -> f64 {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(k, v)| max_abs_diff(v, &as_f64(&b[k])))
        .fold(0.0, f64::max)
}

#[test]
fn every_reference_lora_and_ia3_matches_reference_outputs() {
    let device = device();
    let scratch = tempfile::tempdir().unwrap();
    let cases = case_dirs("lora");
    assert!(cases.len() >= 9, "expected the generator's 9 cases");
    let mut worst = 0.0f64;
    for case in &cases {
        let label = case.file_name().unwrap().to_string_lossy().to_string();
        let mut model = case_base(case, &device, scratch.path());
        let name = model
            .load_adapter(case)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        model.set_active_adapters(name.as_str()).unwrap();
        let delta = max_abs_diff(
            &hidden(&model, &device),
            &expected(case, "expected.safetensors"),
        );
        println!("{label:<20} max |Δ| = {delta:.2e}");
        assert!(delta <= TOLERANCE, "{label}: max |Δ| = {delta:e}");
        worst = worst.max(delta);

        let params: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(case.join("params.json")).unwrap())
                .unwrap();
        assert_eq!(
            model.adapter_summary().adapters[0].num_params as u64,
            params["num_params"].as_u64().unwrap(),
            "{label}: parameter count"
        );
    }
    println!(
        "{} LoRA/IA3 cases, worst max |Δ| = {worst:.2e}",
        cases.len()
    );
}

#[test]
fn merge_equals_unmerged_and_reset_restores_the_weights() {
    let device = device();
    let scratch = tempfile::tempdir().unwrap();
    for label in ["lora_qkv_ffn", "ia3", "ia3_with_output", "ia3_nonzero_bias"] {
        let case = fixtures().join("lora").join(label);
        let mut model = case_base(&case, &device, scratch.path());
        let name = model.load_adapter(&case).unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
        let base = base_params(&model);
        let unmerged = hidden(&model, &device);

        model.merge_adapter(&name).unwrap();
        assert_eq!(model.merged_adapter(), Some(name.as_str()));
        let merged = hidden(&model, &device);
        let want = expected(&case, "expected.safetensors");
        let delta = max_abs_diff(&merged, &want);
        println!("{label:<18} merged vs reference unmerged: max |Δ| = {delta:.2e}");
        assert!(delta <= TOLERANCE, "{label}: merged output {delta:e}");
        let self_delta = max_abs_diff(
            &merged,
            &unmerged.iter().map(|v| *v as f64).collect::<Vec<_>>(),
        );
        assert!(
            self_delta <= TOLERANCE,
            "{label}: merged vs unmerged {self_delta:e}"
        );
        assert!(
            max_param_diff(&base, &base_params(&model)) > 1e-4,
            "{label}: weights unchanged"
        );

        let reference_merged = expected(&case, "expected_merged.safetensors");
        let reference_quirk = max_abs_diff(&merged, &reference_merged);
        if label == "ia3_nonzero_bias" {
            // AdapterHub leaves the bias unscaled when merging IA3: its merged model is not its
            // unmerged model. Ours is.
            println!("{label:<18} AdapterHub's merged output differs by {reference_quirk:.2e}");
            assert!(reference_quirk > 1e-3, "{reference_quirk:e}");
        } else {
            assert!(reference_quirk <= TOLERANCE, "{label}: {reference_quirk:e}");
        }

        model.reset_adapter();
        assert_eq!(model.merged_adapter(), None);
        let restored = max_param_diff(&base, &base_params(&model));
        println!("{label:<18} reset: max |Δ| over base weights = {restored:.2e}");
        assert!(restored <= 1e-6, "{label}: reset left {restored:e}");
        let delta = max_abs_diff(&hidden(&model, &device), &want);
        assert!(delta <= TOLERANCE, "{label}: after reset {delta:e}");
    }
}

#[test]
fn merge_refuses_what_cannot_be_merged_and_changes_nothing() {
    let device = device();
    let mut model = base_model(&device);
    model.add_adapter("bn", BnConfig::seq_bn()).unwrap();
    model
        .load_adapter(fixtures().join("lora/lora_gating"))
        .unwrap();
    model
        .add_adapter(
            "a",
            AdapterConfig::load("lora[r=2,init_weights=bert]").unwrap(),
        )
        .unwrap();
    model
        .add_adapter(
            "b",
            AdapterConfig::load("lora[r=2,init_weights=bert]").unwrap(),
        )
        .unwrap();
    let before = snapshot(&model);
    for (name, what) in [("bn", "bottleneck"), ("lora_gating", "gat")] {
        match model.merge_adapter(name) {
            Err(Error::NotMergeable { name: n, reason }) => {
                assert_eq!(n, name);
                assert!(reason.contains(what), "{reason}");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(
            snapshot(&model),
            before,
            "{name}: a refused merge changed the model"
        );
    }
    assert!(matches!(
        model.merge_adapter("nope"),
        Err(Error::UnknownAdapter(_))
    ));

    model.merge_adapter("a").unwrap();
    model.merge_adapter("a").unwrap(); // merging twice is a no-op
    let merged = snapshot(&model);
    assert!(matches!(
        model.merge_adapter("b"),
        Err(Error::NotMergeable { .. })
    ));
    assert_eq!(snapshot(&model), merged);
    assert!(matches!(
        model.train_adapter("a"),
        Err(Error::InvalidSetup(_))
    ));
    // deleting a merged adapter takes it out of the weights first
    model.delete_adapter("a").unwrap();
    assert_eq!(model.merged_adapter(), None);
    let delta = max_param_diff(&base_params(&base_model(&device)), &base_params(&model));
    assert!(delta <= 1e-6, "{delta:e}");
}

#[test]
fn zero_initialised_lora_and_ones_ia3_are_exact_identities() {
    let device = device();
    let base = base_model(&device);
    let want = hidden(&base, &device);
    for spec in [
        "lora",
        "lora[attn_matrices=[q,k,v],intermediate_lora=True,output_lora=True]",
        "ia3",
    ] {
        let mut model = base.clone();
        model
            .add_adapter("x", AdapterConfig::load(spec).unwrap())
            .unwrap();
        model.set_active_adapters("x").unwrap();
        assert_eq!(hidden(&model, &device), want, "{spec}");
    }
}

#[test]
fn parameter_counts_on_bert_base_equal_the_reference() {
    // AdapterHub's adapter_summary() on bert-base: lora (r 8, q and v) 294,912; ia3 55,296.
    let device = device();
    let mut model = BertConfig::bert_base().init(&device).unwrap();
    model.add_adapter("lora", LoRAConfig::lora()).unwrap();
    model.add_adapter("ia3", LoRAConfig::ia3()).unwrap();
    let summary = model.adapter_summary();
    let counts: Vec<usize> = summary.adapters.iter().map(|r| r.num_params).collect();
    assert_eq!(counts, [294_912, 55_296]);
    assert_eq!(294_912, 12 * 2 * (768 * 8 + 8 * 768));
    assert_eq!(55_296, 12 * (768 + 768 + 3072));
    assert_eq!(summary.base_params, 109_482_240);
    assert!(summary.to_string().contains("lora"), "{summary}");
}

#[test]
fn train_adapter_on_lora_leaves_the_base_bit_identical() {
    let device = Device::flex().autodiff();
    device.seed(5);
    let mut model = BertConfig::tiny().init(&device).unwrap();
    model
        .add_adapter(
            "l",
            AdapterConfig::load(
                "lora[attn_matrices=[q,k,v],intermediate_lora=True,output_lora=True,dropout=0.1]",
            )
            .unwrap(),
        )
        .unwrap();
    model.add_adapter("i", LoRAConfig::ia3()).unwrap();
    model.train_adapter("l").unwrap();
    let before = snapshot(&model);
    let ids = Tensor::<2, Int>::from_ints([[2, 45, 17, 88, 5, 3], [2, 71, 9, 3, 0, 0]], &device);
    let mask = Tensor::<2, Int>::from_ints([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], &device);
    // A random target: mean(out²) would be flat, as the output leaves a LayerNorm.
    let target = Tensor::<3>::random([2, 6, 32], Distribution::Normal(0.0, 1.0), &device);
    let mut optim = AdamConfig::new().init();
    for _ in 0..3 {
        let out = model
            .forward(BertInput::new(ids.clone(), mask.clone()))
            .last_hidden_state;
        let loss = (out - target.clone()).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let after = snapshot(&model);
    let (mut changed, mut frozen) = (0, 0);
    for (path, old) in &before {
        if path.contains(".loras.l.") {
            changed += usize::from(old != &after[path]);
        } else {
            assert_eq!(old, &after[path], "{path} changed although only `l` trains");
            frozen += 1;
        }
    }
    // A and B of 5 projections in 2 layers: B starts at zero, so A only moves from step 2.
    assert_eq!(changed, 20, "every LoRA matrix of `l` must move");
    assert!(frozen > 30, "{frozen}");
}

#[test]
fn lora_save_load_round_trip_is_bit_exact() {
    let device = device();
    let base = base_model(&device);
    let export = std::env::var_os("BURN_ADAPTERS_EXPORT").map(PathBuf::from);
    let scratch = tempfile::tempdir().unwrap();
    for case in case_dirs("lora") {
        if case.join("base_overrides.safetensors").is_file() {
            continue; // the Python check runs on the plain base model
        }
        let mut model = base.clone();
        let name = model.load_adapter(&case).unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
        let before = hidden(&model, &device);
        let out = export
            .clone()
            .unwrap_or_else(|| scratch.path().to_path_buf())
            .join(&name);
        model.save_adapter(&out, &name).unwrap();
        let saved: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        let reference: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(case.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(saved["config"], reference["config"], "{name}: config");
        let mut reloaded = base.clone();
        reloaded.load_adapter_as(&out, "again").unwrap();
        reloaded.set_active_adapters("again").unwrap();
        assert_eq!(hidden(&reloaded, &device), before, "{name}");
        if export.is_some() {
            write_f32(
                &out.join("expected.safetensors"),
                "last_hidden_state",
                &before,
                &[2, 7, 32],
            );
        }
    }
}

#[test]
fn transformer_encoder_takes_lora_and_ia3() {
    let device = device();
    device.seed(13);
    let encoder = TransformerEncoderConfig::new(32, 64, 4, 2).init(&device);
    let x = Tensor::<3>::random([2, 5, 32], Distribution::Normal(0.0, 1.0), &device);
    let want = values(encoder.forward(TransformerEncoderInput::new(x.clone())));
    let paths = snapshot(&encoder);
    let mut model = AdapterTransformerEncoder::from_encoder(encoder.clone());
    model.add_adapter("zero", LoRAConfig::lora()).unwrap();
    model.add_adapter("ia3", LoRAConfig::ia3()).unwrap();
    model
        .add_adapter(
            "l",
            AdapterConfig::load("lora[r=4,init_weights=bert,output_lora=True]").unwrap(),
        )
        .unwrap();
    for identity in ["zero", "ia3"] {
        model.set_active_adapters(identity).unwrap();
        assert_eq!(
            values(model.forward(AdapterInput::new(x.clone()))),
            want,
            "{identity}"
        );
    }
    model.set_active_adapters("l").unwrap();
    let adapted = values(model.forward(AdapterInput::new(x.clone())));
    assert_ne!(adapted, want);
    model.merge_adapter("l").unwrap();
    let merged = values(model.forward(AdapterInput::new(x.clone())));
    let delta = max_abs_diff(&merged, &as_f64(&adapted));
    assert!(delta <= TOLERANCE, "{delta:e}");
    // into_encoder undoes the merge and drops the adapters
    let back = model.into_encoder();
    let restored = max_param_diff(&paths, &snapshot(&back));
    assert!(restored <= 1e-6, "{restored:e}");
}
