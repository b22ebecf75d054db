//! Parity with the Python reference (AdapterHub `adapters` 1.3.0): every fixture made by
//! `tools/gen_fixtures.py` loads here and reproduces the reference outputs.

mod common;

use burn_adapters::prelude::*;
use common::*;

const TOLERANCE: f64 = 1e-5;

#[test]
fn bert_loader_reproduces_transformers() {
    let device = device();
    let model = base_model(&device);
    let output = model.forward(fixture_inputs(&device));
    let expected = fixtures().join("base/expected.safetensors");
    let (shape, want) = read_tensor(&expected, "last_hidden_state");
    assert_eq!(output.last_hidden_state.dims().to_vec(), shape);
    let hidden = max_abs_diff(&values(output.last_hidden_state), &want);
    let (_, want_pooled) = read_tensor(&expected, "pooler_output");
    let pooled: Vec<f32> = output
        .pooler_output
        .unwrap()
        .into_data()
        .try_to_vec()
        .unwrap();
    let pooled = max_abs_diff(&pooled, &want_pooled);
    println!("base model: last_hidden_state max |Δ| = {hidden:.2e}, pooler max |Δ| = {pooled:.2e}");
    assert!(hidden <= TOLERANCE && pooled <= TOLERANCE);
}

#[test]
fn every_reference_adapter_matches_reference_outputs() {
    let device = device();
    let base = base_model(&device);
    let dirs = case_dirs("bn");
    assert!(
        dirs.len() >= 24,
        "expected the generator's 24 cases, found {}",
        dirs.len()
    );
    let mut worst = (0.0f64, String::new());
    for dir in &dirs {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let mut model = base.clone();
        let name = model
            .load_adapter(dir)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(name, case);
        model.set_active_adapters(name.as_str()).unwrap();
        let got = values(model.forward(fixture_inputs(&device)).last_hidden_state);
        let (_, want) = read_tensor(&dir.join("expected.safetensors"), "last_hidden_state");
        let delta = max_abs_diff(&got, &want);
        println!("{case:<45} max |Δ| = {delta:.2e}");
        assert!(delta <= TOLERANCE, "{case}: max |Δ| = {delta:e}");
        if delta > worst.0 {
            worst = (delta, case);
        }
    }
    println!(
        "{} reference cases, worst max |Δ| = {:.2e} ({})",
        dirs.len(),
        worst.0,
        worst.1
    );
}

#[test]
fn reference_parameter_counts_match() {
    let device = device();
    let base = base_model(&device);
    for dir in case_dirs("bn") {
        let mut model = base.clone();
        let name = model.load_adapter(&dir).unwrap();
        let params: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("params.json")).unwrap())
                .unwrap();
        let summary = model.adapter_summary();
        assert_eq!(
            summary.adapters[0].num_params as u64,
            params["num_params"].as_u64().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn reference_configs_round_trip_exactly() {
    for dir in case_dirs("bn") {
        let file: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        let config = AdapterConfig::from_json(&file["config"]).unwrap();
        assert_eq!(config.to_json(), file["config"], "{}", dir.display());
    }
}

/// Save → load here is bit-exact, and (when `BURN_ADAPTERS_EXPORT` names a directory) the
/// Rust-saved adapters and their outputs are written there for `tools/check_rust_adapters.py`.
#[test]
fn save_load_round_trip_is_bit_exact() {
    let device = device();
    let base = base_model(&device);
    let export = std::env::var_os("BURN_ADAPTERS_EXPORT").map(std::path::PathBuf::from);
    let scratch = tempfile::tempdir().unwrap();
    for dir in case_dirs("bn") {
        let mut model = base.clone();
        let name = model.load_adapter(&dir).unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
        let before = values(model.forward(fixture_inputs(&device)).last_hidden_state);

        let out = export
            .clone()
            .unwrap_or_else(|| scratch.path().to_path_buf())
            .join(&name);
        model.save_adapter(&out, &name).unwrap();
        let mut reloaded = base.clone();
        reloaded.load_adapter_as(&out, "reloaded").unwrap();
        reloaded.set_active_adapters("reloaded").unwrap();
        let after = values(reloaded.forward(fixture_inputs(&device)).last_hidden_state);
        assert_eq!(before, after, "{name}: reload changed the outputs");

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

/// AdapterHub's default format: `pytorch_adapter.bin` saved from a model with heads (`bert.`
/// prefixed keys), with the classification head in `pytorch_model_head.bin`.
#[test]
fn pytorch_bin_adapters_and_heads_match_reference() {
    let device = device();
    let base = base_model(&device);
    for case in ["seq_bn_head", "ln_before"] {
        let dir = fixtures().join("bin").join(case);
        let mut model = base.clone();
        let name = model
            .load_adapter(&dir)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        model.set_active_adapters(name.as_str()).unwrap();
        let expected = dir.join("expected.safetensors");
        let got = values(model.forward(fixture_inputs(&device)).last_hidden_state);
        let (_, want) = read_tensor(&expected, "last_hidden_state");
        let delta = max_abs_diff(&got, &want);
        println!("{case} (.bin) max |Δ| = {delta:.2e}");
        assert!(delta <= TOLERANCE, "{case}: {delta:e}");
        if case == "seq_bn_head" {
            let logits = model.classify(&name, fixture_inputs(&device)).unwrap();
            let logits: Vec<f32> = logits.into_data().try_to_vec().unwrap();
            let (_, want) = read_tensor(&expected, "logits");
            let delta = max_abs_diff(&logits, &want);
            println!("{case} head logits max |Δ| = {delta:.2e}");
            assert!(delta <= TOLERANCE, "{case} logits: {delta:e}");
            // and the head saves back in AdapterHub's layout
            let out = tempfile::tempdir().unwrap();
            model.save_adapter(out.path(), &name).unwrap();
            let mut again = base.clone();
            again.load_adapter(out.path()).unwrap();
            again.set_active_adapters(name.as_str()).unwrap();
            let relogits: Vec<f32> = again
                .classify(&name, fixture_inputs(&device))
                .unwrap()
                .into_data()
                .try_to_vec()
                .unwrap();
            let before: Vec<f32> = model
                .classify(&name, fixture_inputs(&device))
                .unwrap()
                .into_data()
                .try_to_vec()
                .unwrap();
            assert_eq!(before, relogits);
        }
    }
}
