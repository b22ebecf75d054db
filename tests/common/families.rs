//! The fixture hosts (BERT, Llama, GPT-2) behind one trait, for the suites that run every
//! method on each of them.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use burn_adapters::AdapterModel;
use burn_adapters::models::bert::BertModel;
use burn_adapters::models::gpt2::Gpt2Model;
use burn_adapters::models::llama::LlamaModel;

use burn_adapters::generation::{CausalLm, GenerationConfig, generate};

use super::decoder::{at_tokens, decoder_inputs, reference_tokens};
use super::{base_model, fixture_inputs, fixtures, max_abs_diff_tensors, read_tensor};

/// A host of the fixtures: how to load its base and run the fixture inputs.
pub trait Family: AdapterModel {
    const NAME: &'static str;
    /// The key of the output in `expected.safetensors`.
    const OUTPUT: &'static str;
    fn base(device: &Device) -> Self;
    fn output(&self, device: &Device) -> Tensor<3>;
}

impl Family for BertModel {
    const NAME: &'static str = "bert";
    const OUTPUT: &'static str = "last_hidden_state";
    fn base(device: &Device) -> Self {
        base_model(device)
    }
    fn output(&self, device: &Device) -> Tensor<3> {
        self.forward(fixture_inputs(device)).last_hidden_state
    }
}

impl Family for LlamaModel {
    const NAME: &'static str = "llama";
    const OUTPUT: &'static str = "logits";
    fn base(device: &Device) -> Self {
        LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), device).unwrap()
    }
    fn output(&self, device: &Device) -> Tensor<3> {
        self.try_forward(decoder_inputs(device)).unwrap()
    }
}

impl Family for Gpt2Model {
    const NAME: &'static str = "gpt2";
    const OUTPUT: &'static str = "logits";
    fn base(device: &Device) -> Self {
        Gpt2Model::from_pretrained(fixtures().join("decoder/gpt2/base"), device).unwrap()
    }
    fn output(&self, device: &Device) -> Tensor<3> {
        self.try_forward(decoder_inputs(device)).unwrap()
    }
}

/// max |Δ| of `output` against `key` of `file`, over the real tokens for decoders (the padded
/// rows' logits at padding are not compared, as in the decoder suite).
pub fn deviation<F: Family>(output: Tensor<3>, file: &Path, key: &str, device: &Device) -> f64 {
    let output = match F::OUTPUT {
        "logits" => at_tokens(output, &decoder_inputs(device)),
        _ => output,
    };
    let (shape, expected) = read_tensor(file, key);
    assert_eq!(output.dims().to_vec(), shape, "{file:?} {key}");
    let expected = Tensor::<1>::from_floats(
        expected
            .iter()
            .map(|v| *v as f32)
            .collect::<Vec<_>>()
            .as_slice(),
        device,
    )
    .reshape([shape[0], shape[1], shape[2]]);
    let expected = match F::OUTPUT {
        "logits" => at_tokens(expected, &decoder_inputs(device)),
        _ => expected,
    };
    max_abs_diff_tensors(output, expected)
}

/// Where `tools/check_rust_adapters.py` (BERT) and `check_rust_decoder_adapters.py` (the
/// decoders) read `F`'s Rust-saved adapters below an export directory.
pub fn export_dir<F: Family>(root: &Path) -> std::path::PathBuf {
    match F::NAME {
        "bert" => root.join("bert"),
        family => root.join("decoder").join(family),
    }
}

/// Saves `model`'s active adapter `name` to `out`, checks that a fresh base reloads it with
/// the same output, and writes that output to `out/expected.safetensors` for the Python
/// checkers.
pub fn save_and_reload<F: Family>(model: &F, name: &str, out: &Path, device: &Device) {
    model.save_adapter(out, name).unwrap();
    let mut reloaded = F::base(device);
    reloaded.load_adapter(out).unwrap();
    reloaded.set_active_adapters(name).unwrap();
    let before = model.output(device);
    let dims = before.dims();
    let before = super::values(before);
    let after = super::values(reloaded.output(device));
    assert_eq!(before, after, "{} {name}", F::NAME);
    super::write_f32(&out.join("expected.safetensors"), F::OUTPUT, &before, &dims);
}

/// Greedy generation through the KV cache with the adapter in `dir` active equals the fixture's
/// `generated` (transformers + adapters recomputing every step).
pub fn generates_as_reference<F: Family + CausalLm>(dir: &Path, device: &Device) {
    let name = dir.file_name().unwrap().to_str().unwrap();
    let mut model = F::base(device);
    model.load_adapter(dir).unwrap();
    model.set_active_adapters(name).unwrap();
    let config = GenerationConfig::new(20)
        .with_stop_tokens(vec![2])
        .with_pad_token_id(0);
    let input = decoder_inputs(device);
    let (ids, mask) = (input.input_ids, input.attention_mask.unwrap());
    let tokens = generate(&model, ids, mask, &config, |_, _| {}).unwrap();
    assert_eq!(tokens, reference_tokens(dir), "{} {name}", F::NAME);
}

/// The cases `tools/` listed in `tests/fixtures/<group>/<family>/cases.json`: name, entry and
/// directory, in the listed order; `count` says how many there must be.
pub fn listed_cases<F: Family>(
    group: &str,
    count: usize,
) -> Vec<(String, serde_json::Value, PathBuf)> {
    let root = fixtures().join(group).join(F::NAME);
    let listed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("cases.json")).unwrap()).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), count, "{group}/{}", F::NAME);
    listed
        .iter()
        .map(|case| {
            let name = case["name"].as_str().unwrap().to_string();
            let dir = root.join(&name);
            (name, case.clone(), dir)
        })
        .collect()
}

/// Every listed case of `group` loaded into a fresh base and activated gives the reference's
/// output within `tolerance` and the reference's parameter count.
pub fn cases_match_reference<F: Family>(
    group: &str,
    count: usize,
    tolerance: f64,
    device: &Device,
) {
    for (name, case, dir) in listed_cases::<F>(group, count) {
        let mut model = F::base(device);
        model.load_adapter(&dir).unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
        let expected = dir.join("expected.safetensors");
        let d = deviation::<F>(model.output(device), &expected, F::OUTPUT, device);
        println!("{group} {} {name}: max |Δ| {d:.2e}", F::NAME);
        assert!(d <= tolerance, "{group} {} {name}: max |Δ| {d}", F::NAME);
        let params = model.adapter_summary().adapters[0].num_params as u64;
        assert_eq!(params, case["num_params"].as_u64().unwrap(), "{name}");
    }
}

/// Every listed case of `group` saved from Rust reloads the same, into `export_dir(root)`.
pub fn rust_saved_cases_reload<F: Family>(group: &str, count: usize, root: &Path, device: &Device) {
    for (name, _, dir) in listed_cases::<F>(group, count) {
        let mut model = F::base(device);
        model.load_adapter(&dir).unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
        save_and_reload(&model, &name, &export_dir::<F>(root).join(&name), device);
    }
}

/// The parameter paths of `model` whose values differ from `before` (a snapshot).
pub fn moved<M: burn::module::Module>(
    before: &std::collections::BTreeMap<String, Vec<f32>>,
    model: &M,
) -> Vec<String> {
    super::snapshot::snapshot(model)
        .into_iter()
        .filter(|(path, values)| before.get(path) != Some(values))
        .map(|(path, _)| path)
        .collect()
}

/// Where a suite's Rust-saved files go: the directory environment variable `var` names (for the
/// Python checkers in CI), else a scratch directory kept alive by the returned guard.
pub fn export_root(var: &str) -> (tempfile::TempDir, PathBuf) {
    let scratch = tempfile::tempdir().unwrap();
    let root = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| scratch.path().to_path_buf());
    (scratch, root)
}

/// With adapter `name` active in `model`: merging it computes the unmerged output (≤ 1e-5),
/// and resetting restores every weight within 1e-6.
pub fn merge_computes_the_same_and_resets<F: Family>(model: &mut F, name: &str, device: &Device) {
    let unmerged = model.output(device);
    let before = super::snapshot::snapshot(model);
    model.merge_adapter(name).unwrap();
    let d = super::max_abs_diff_tensors(model.output(device), unmerged);
    assert!(d <= 1e-5, "{} {name} merged: max |Δ| {d}", F::NAME);
    model.reset_adapter();
    let after = super::snapshot::snapshot(model);
    for (path, values) in &before {
        let d = values
            .iter()
            .zip(&after[path])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(d <= 1e-6, "{} {name} {path}: {d}", F::NAME);
    }
}
