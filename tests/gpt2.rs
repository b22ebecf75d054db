//! GPT-2: logits against transformers, AdapterHub (the fused `c_attn` LoRA) and PEFT fixtures
//! (`tools/gen_fixtures_decoder.py`), generation, the cache, merging and files.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use burn_adapters::generation::{GenerationConfig, generate};
use burn_adapters::model::AverageStrategy;
use burn_adapters::models::gpt2::{DecoderInput, Gpt2Config, Gpt2Model, KvCache};
use burn_adapters::prelude::*;
use burn_adapters::train::causal_lm_loss;
use common::decoder::*;
use common::*;

const TOLERANCE: f64 = 1e-5;

fn family_dir() -> PathBuf {
    fixtures().join("decoder/gpt2")
}

fn case_dir(case: &str) -> PathBuf {
    family_dir().join("cases").join(case)
}

fn base(device: &Device) -> Gpt2Model {
    Gpt2Model::from_pretrained(family_dir().join("base"), device).unwrap()
}

fn expected_logits(dir: &Path) -> Vec<f64> {
    read_tensor(&dir.join("expected.safetensors"), "logits").1
}

fn logits(model: &Gpt2Model, device: &Device) -> Vec<f32> {
    values(model.try_forward(decoder_inputs(device)).unwrap())
}

fn export_root(scratch: &tempfile::TempDir) -> PathBuf {
    std::env::var_os("BURN_ADAPTERS_EXPORT_DECODER")
        .map(PathBuf::from)
        .unwrap_or_else(|| scratch.path().to_path_buf())
        .join("gpt2")
}

#[test]
fn base_logits_and_loss_match_transformers() {
    let device = device();
    let model = base(&device);
    let delta = max_abs_diff(&logits(&model, &device), &expected_logits(&family_dir()));
    println!("gpt2 base logits max |Δ| = {delta:.2e}");
    assert!(delta <= TOLERANCE, "max |Δ| = {delta:e}");

    let input = decoder_inputs(&device);
    let labels = lm_labels(&input);
    let loss = causal_lm_loss(model.forward(input), labels).unwrap();
    let expected = read_tensor(&family_dir().join("expected.safetensors"), "loss").1;
    let delta = max_abs_diff(&values(loss), &expected);
    assert!(delta <= TOLERANCE, "loss max |Δ| = {delta:e}");
}

#[test]
fn every_method_matches_adapterhub_on_gpt2() {
    let device = device();
    let listed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(family_dir().join("cases/cases.json")).unwrap(),
    )
    .unwrap();
    let mut runs = 0;
    for case in case_dirs("decoder/gpt2/cases") {
        let mut model = base(&device);
        let name = model.load_adapter(&case).unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
        let delta = max_abs_diff(&logits(&model, &device), &expected_logits(&case));
        println!("gpt2/{name:<14} max |Δ| = {delta:.2e}");
        assert!(delta <= TOLERANCE, "{name}: max |Δ| = {delta:e}");
        let entry = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name.as_str())
            .unwrap();
        assert_eq!(
            model.adapter_summary().adapters[0].num_params as u64,
            entry["num_params"].as_u64().unwrap(),
            "{name}: parameter count"
        );
        runs += 1;
    }
    assert_eq!(runs, 6, "the generator's 6 GPT-2 cases");
}

/// Written for `tools/check_rust_decoder_adapters.py` under `BURN_ADAPTERS_EXPORT_DECODER`.
#[test]
fn rust_saved_gpt2_adapters_reload_exactly() {
    let device = device();
    let scratch = tempfile::tempdir().unwrap();
    let root = export_root(&scratch);
    let base = base(&device);
    for case in case_dirs("decoder/gpt2/cases") {
        let mut model = base.clone();
        let name = model.load_adapter(&case).unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
        let out = root.join(&name);
        model.save_adapter(&out, &name).unwrap();
        let before = model.forward(decoder_inputs(&device));

        let mut reloaded = base.clone();
        reloaded.load_adapter(&out).unwrap();
        reloaded.set_active_adapters(name.as_str()).unwrap();
        let dims = before.dims();
        let before = values(before);
        assert_eq!(
            before,
            values(reloaded.forward(decoder_inputs(&device))),
            "{name}"
        );
        write_f32(&out.join("expected.safetensors"), "logits", &before, &dims);
    }
}

#[test]
fn peft_loras_on_gpt2_match_peft_and_save_back() {
    let device = device();
    let scratch = tempfile::tempdir().unwrap();
    let root = export_root(&scratch);
    let base = base(&device);
    let mut runs = 0;
    for case in case_dirs("decoder/gpt2/peft") {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let mut model = base.clone();
        model.load_peft_adapter(&case, &name).unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
        let got = model.forward(decoder_inputs(&device));
        let delta = max_abs_diff(&values(got.clone()), &expected_logits(&case));
        println!("gpt2/{name:<14} PEFT max |Δ| = {delta:.2e}");
        assert!(delta <= TOLERANCE, "{name}: max |Δ| = {delta:e}");

        let out = root.join(&name);
        model.save_peft_adapter(&out, &name).unwrap();
        let dims = got.dims();
        write_f32(
            &out.join("expected.safetensors"),
            "logits",
            &values(got.clone()),
            &dims,
        );
        let config = std::fs::read_to_string(out.join("adapter_config.json")).unwrap();
        assert!(config.contains("\"fan_in_fan_out\": true"), "{config}");
        let mut reloaded = base.clone();
        reloaded.load_peft_adapter(&out, &name).unwrap();
        reloaded.set_active_adapters(name.as_str()).unwrap();
        assert_eq!(
            values(got),
            values(reloaded.forward(decoder_inputs(&device)))
        );
        runs += 1;
    }
    assert_eq!(runs, 3);
}

#[test]
fn a_fused_lora_saves_only_in_the_format_that_has_its_shape() {
    let device = device();
    let scratch = tempfile::tempdir().unwrap();
    let mut model = base(&device);
    model
        .load_peft_adapter(family_dir().join("peft/peft_c_attn"), "peft")
        .unwrap();
    let error = model
        .save_adapter(scratch.path().join("ah"), "peft")
        .unwrap_err();
    assert!(
        matches!(&error, Error::Unsupported(m) if m.contains("transformer.h.0.attn.c_attn")),
        "{error}"
    );
    assert!(!scratch.path().join("ah").exists());

    model.load_adapter(case_dir("lora_qv")).unwrap();
    let error = model
        .save_peft_adapter(scratch.path().join("peft"), "lora_qv")
        .unwrap_err();
    assert!(
        matches!(&error, Error::Unsupported(m) if m.contains("c_attn")),
        "{error}"
    );
}

#[test]
fn greedy_generation_matches_transformers() {
    let device = device();
    let config = GenerationConfig::new(20)
        .with_stop_tokens(vec![2])
        .with_pad_token_id(0);
    let mut model = base(&device);
    for case in ["", "seq_bn", "lora_qv", "ia3"] {
        let dir = match case {
            "" => family_dir(),
            case => case_dir(case),
        };
        if !case.is_empty() {
            let name = model.load_adapter(&dir).unwrap();
            model.set_active_adapters(name.as_str()).unwrap();
        }
        let input = decoder_inputs(&device);
        let (ids, mask) = (input.input_ids, input.attention_mask.unwrap());
        let tokens = generate(&model, ids, mask, &config, |_, _| {}).unwrap();
        assert_eq!(tokens, reference_tokens(&dir), "gpt2 {case}");
    }
}

#[test]
fn incremental_decoding_equals_a_full_run_with_and_without_adapters() {
    let device = device();
    let mut model = base(&device);
    let input = decoder_inputs(&device);
    for case in ["", "lora_all", "ia3", "par_bn"] {
        if !case.is_empty() {
            let name = model.load_adapter(case_dir(case)).unwrap();
            model.set_active_adapters(name.as_str()).unwrap();
        }
        let full = at_tokens(model.forward(input.clone()), &input);
        let mut cache = KvCache::new();
        let mut pieces = Vec::new();
        let mut start = 0;
        for len in [3, 2, 1, 1] {
            let piece = DecoderInput::new(
                input.input_ids.clone().narrow(1, start, len),
                input.attention_mask.clone().unwrap().narrow(1, start, len),
            );
            pieces.push(model.try_forward_cached(piece, &mut cache).unwrap());
            start += len;
        }
        let cached = at_tokens(Tensor::cat(pieces, 1), &input);
        let delta = max_abs_diff_tensors(cached, full);
        assert!(delta <= TOLERANCE, "gpt2 {case}: max |Δ| = {delta:e}");
    }
}

#[test]
fn merged_fused_loras_and_ia3_equal_unmerged_and_reset_restores_the_base() {
    let device = device();
    let base_model = base(&device);
    let base_logits = logits(&base_model, &device);
    for case in ["lora_qv", "lora_k_mlp", "ia3"] {
        let mut model = base_model.clone();
        let name = model.load_adapter(case_dir(case)).unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
        let unmerged = logits(&model, &device);
        model.merge_adapter(&name).unwrap();
        let delta = max_abs_diff(&logits(&model, &device), &as_f64(&unmerged));
        assert!(delta <= TOLERANCE, "{case} merged: max |Δ| = {delta:e}");
        model.reset_adapter();
        model.deactivate_adapters();
        let delta = max_abs_diff(&logits(&model, &device), &as_f64(&base_logits));
        assert!(delta <= TOLERANCE, "{case} reset: max |Δ| = {delta:e}");
    }
}

#[test]
fn each_row_generates_with_its_own_adapter() {
    let device = device();
    check_per_row_generation(base(&device), &family_dir().join("cases"), &device);
}

#[test]
fn train_adapter_trains_a_fused_lora_and_leaves_the_base_alone() {
    let device = device().autodiff();
    let mut model = base(&device);
    let config = AdapterConfig::load(r#"lora[r=4,attn_matrices=["q","v"],output_lora=True]"#);
    model.add_adapter("task", config.unwrap()).unwrap();
    model.train_adapter("task").unwrap();
    let before = frozen(&model, "task");
    let (model, losses) = train_steps(model, Gpt2Model::forward, &device);
    assert!(
        losses[19] < 0.8 * losses[0],
        "the loss fell from {} to {}",
        losses[0],
        losses[19]
    );
    assert_eq!(before, frozen(&model, "task"), "base parameters changed");
}

#[test]
fn configs_and_inputs_gpt2_cannot_run_are_refused_naming_the_field() {
    let scratch = tempfile::tempdir().unwrap();
    let base_config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(family_dir().join("base/config.json")).unwrap(),
    )
    .unwrap();
    for (key, value) in [
        ("add_cross_attention", serde_json::json!(true)),
        ("n_head", serde_json::json!(5)),
        ("activation_function", serde_json::json!("wiggle")),
        ("model_type", serde_json::json!("llama")),
    ] {
        let mut config = base_config.clone();
        config[key] = value;
        let path = scratch.path().join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        match Gpt2Config::from_file(&path) {
            Err(Error::Json { field, .. }) => assert_eq!(field, key),
            other => panic!("{key}: expected a JSON error, got {other:?}"),
        }
    }

    let device = device();
    let model = Gpt2Config::tiny().init(&device).unwrap();
    let ids = |row: Vec<i64>| {
        let len = row.len();
        Tensor::<2, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(row, [1, len]),
            &device,
        )
    };
    for (row, what) in [(vec![], "input_ids"), (vec![3, 61], "input_ids")] {
        match model.try_forward(DecoderInput::ids(ids(row))) {
            Err(Error::InvalidInput { input, .. }) => assert_eq!(input, what),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }
    let mut cache = KvCache::new();
    let too_long = DecoderInput::ids(ids(vec![3; 129]));
    assert!(model.try_forward_cached(too_long, &mut cache).is_err());
    assert!(cache.is_empty());
}

#[test]
fn a_stack_of_loras_at_projections_that_are_not_square_is_refused_not_a_panic() {
    let device = device();
    let mut model = Gpt2Config::tiny().init(&device).unwrap();
    for name in ["a", "b"] {
        let config = AdapterConfig::load("lora[r=2,init_weights=bert]").unwrap();
        model.add_adapter(name, config).unwrap();
    }
    match model.set_active_adapters("Stack[a, b]") {
        Err(Error::InvalidSetup(message)) => assert!(
            message.contains("`b`") && message.contains("QueryKeyValue"),
            "{message}"
        ),
        other => panic!("expected InvalidSetup, got {other:?}"),
    }
    assert!(model.active_adapters().is_none(), "nothing was activated");

    // An IA3 after a LoRA scales the update, whatever the widths.
    model
        .add_adapter("s", AdapterConfig::load("ia3").unwrap())
        .unwrap();
    model.set_active_adapters("Stack[a, s]").unwrap();
    let ids = Tensor::<2, burn::tensor::Int>::from_ints([[1, 2, 3]], &device);
    assert_eq!(
        model.try_forward(DecoderInput::ids(ids)).unwrap().dims(),
        [1, 3, 61]
    );
}

/// Composition blocks on a decoder: `Parallel` runs the batch once per branch, `BatchSplit`
/// gives each row its adapter, and `Average` of an adapter and its copy is the adapter.
#[test]
fn composition_blocks_on_gpt2_equal_their_single_adapter_runs() {
    let device = device();
    let mut model = base(&device);
    for case in ["seq_bn", "lora_all"] {
        model.load_adapter(case_dir(case)).unwrap();
    }
    model
        .load_adapter_as(case_dir("lora_all"), "lora_copy")
        .unwrap();
    let input = decoder_inputs(&device);
    let mut run = |setup: &str| {
        model.set_active_adapters(setup).unwrap();
        at_tokens(model.forward(input.clone()), &input)
    };
    let bottleneck = run("seq_bn");
    let lora = run("lora_all");
    let parallel = run("Parallel[seq_bn, lora_all]");
    let both = Tensor::cat(vec![bottleneck.clone(), lora.clone()], 0);
    let delta = max_abs_diff_tensors(parallel, both);
    assert!(delta <= TOLERANCE, "Parallel: max |Δ| = {delta:e}");

    let split = run("BatchSplit[seq_bn, lora_all](batch_sizes=1,1)");
    let rows = Tensor::cat(
        vec![bottleneck.narrow(0, 0, 1), lora.clone().narrow(0, 1, 1)],
        0,
    );
    let delta = max_abs_diff_tensors(split, rows);
    assert!(delta <= TOLERANCE, "BatchSplit: max |Δ| = {delta:e}");

    let average = run("Average[lora_all, lora_copy]");
    let delta = max_abs_diff_tensors(average, lora);
    assert!(delta <= TOLERANCE, "Average: max |Δ| = {delta:e}");
}

#[test]
fn adapter_fusion_on_gpt2_matches_adapterhub() {
    let device = device();
    let delta = fusion_delta(base(&device), "gpt2", Gpt2Model::forward, &device);
    println!("gpt2 Fuse[fa, fb] max |Δ| = {delta:.2e}");
    assert!(delta <= TOLERANCE, "max |Δ| = {delta:e}");
}

/// An untied checkpoint whose `lm_head` (a torch `Linear`, `[vocab, hidden]`) holds the token
/// embeddings computes what the tied model does: the head is read transposed, the `Conv1D`s not.
#[test]
fn an_untied_output_head_loads_transposed() {
    let scratch = tempfile::tempdir().unwrap();
    let base = family_dir().join("base");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("config.json")).unwrap()).unwrap();
    config["tie_word_embeddings"] = serde_json::json!(false);
    std::fs::write(scratch.path().join("config.json"), config.to_string()).unwrap();
    let bytes = std::fs::read(base.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut views = file.tensors();
    let embeddings = file.tensor("transformer.wte.weight").unwrap();
    views.push(("lm_head.weight".to_string(), embeddings));
    safetensors::serialize_to_file(views, None, &scratch.path().join("model.safetensors")).unwrap();

    let device = device();
    let model = Gpt2Model::from_pretrained(scratch.path(), &device).unwrap();
    assert!(model.lm_head.is_some());
    let delta = max_abs_diff(&logits(&model, &device), &expected_logits(&family_dir()));
    assert!(delta <= TOLERANCE, "max |Δ| = {delta:e}");
}

/// Averaging follows the per-block form: linear averages of AdapterHub's fused LoRAs work (an
/// adapter averaged with its copy is itself), while a ΔW average there and any average of
/// PEFT's whole-projection LoRA are refused, naming the adapter.
#[test]
fn averaging_loras_on_the_fused_projection() {
    let device = device();
    let mut model = base(&device);
    model.load_adapter(case_dir("lora_qv")).unwrap();
    model.load_adapter_as(case_dir("lora_qv"), "copy").unwrap();
    model
        .average_adapter(
            "avg",
            &[("lora_qv", 0.5), ("copy", 0.5)],
            AverageStrategy::Linear,
        )
        .unwrap();
    model.set_active_adapters("avg").unwrap();
    let delta = max_abs_diff(
        &logits(&model, &device),
        &expected_logits(&case_dir("lora_qv")),
    );
    assert!(delta <= TOLERANCE, "linear average: max |Δ| = {delta:e}");

    let svd = AverageStrategy::LoraDeltaWSvd { rank: 4 };
    let refused = model.average_adapter("svd", &[("lora_qv", 0.5), ("copy", 0.5)], svd);
    assert!(matches!(refused, Err(Error::InvalidSetup(m)) if m.contains("`lora_qv`")));
    model
        .load_peft_adapter(family_dir().join("peft/peft_c_attn"), "peft")
        .unwrap();
    let refused = model.average_adapter("p", &[("peft", 1.0)], AverageStrategy::Linear);
    assert!(matches!(refused, Err(Error::InvalidSetup(m)) if m.contains("`peft`")));
    assert!(!model.has_adapter("svd") && !model.has_adapter("p"));
}
