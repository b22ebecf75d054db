//! The real all-MiniLM-L6-v2 with a Pfeiffer adapter trained/perturbed in Python gives the same
//! outputs here. Needs the assets: `tools/fetch_assets.sh DIR` then
//! `python tools/minilm_pfeiffer.py --model-dir DIR/all-MiniLM-L6-v2 DIR/minilm_pfeiffer`, and
//! `BURN_ADAPTERS_ASSETS=DIR`, then `cargo test --test minilm -- --ignored` (CI does all of
//! it). The model cannot be committed, so the test is ignored by a plain `cargo test` rather
//! than passing without its data.

mod common;

use burn_adapters::models::bert::BertModel;
use burn_adapters::prelude::*;
use common::*;

#[test]
#[ignore = "needs the real model: BURN_ADAPTERS_ASSETS=DIR (see the file's docs); CI runs it"]
fn minilm_with_python_pfeiffer_adapter_matches_reference() {
    let assets = std::env::var_os("BURN_ADAPTERS_ASSETS")
        .map(std::path::PathBuf::from)
        .expect("BURN_ADAPTERS_ASSETS names the directory tools/fetch_assets.sh filled");
    let device = device();
    let mut model = BertModel::from_pretrained(assets.join("all-MiniLM-L6-v2"), &device).unwrap();
    let case = assets.join("minilm_pfeiffer");
    let name = model.load_adapter(case.join("adapter")).unwrap();
    model.set_active_adapters(name.as_str()).unwrap();
    let output = model.forward(inputs(&case.join("inputs.safetensors"), &device));
    let (shape, want) = read_tensor(&case.join("expected.safetensors"), "last_hidden_state");
    assert_eq!(output.last_hidden_state.dims().to_vec(), shape);
    let delta = max_abs_diff(&values(output.last_hidden_state), &want);
    println!(
        "all-MiniLM-L6-v2 + Python Pfeiffer adapter `{name}`: max |Δ| = {delta:.2e} over {shape:?}"
    );
    assert!(delta <= 1e-4, "max |Δ| = {delta:e}");
}
