//! Llama-family decoders: logits against transformers and AdapterHub fixtures
//! (`tools/gen_fixtures_decoder.py`), incremental decoding, files and input checks.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor};
use burn_adapters::generation::{GenerationConfig, Sampling, generate};
use burn_adapters::models::llama::{DecoderInput, KvCache, LlamaConfig, LlamaModel};
use burn_adapters::prelude::*;
use burn_adapters::train::{IGNORE_INDEX, causal_lm_loss};
use common::decoder::*;
use common::snapshot::snapshot;
use common::*;

const TOLERANCE: f64 = 1e-5;
/// The families `tools/gen_fixtures_decoder.py` writes.
const FAMILIES: [&str; 4] = ["llama", "llama_linear_tied", "mistral", "qwen2"];

fn family_dir(family: &str) -> PathBuf {
    fixtures().join("decoder").join(family)
}

fn case_dir(family: &str, case: &str) -> PathBuf {
    family_dir(family).join("cases").join(case)
}

fn base(family: &str, device: &Device) -> LlamaModel {
    LlamaModel::from_pretrained(family_dir(family).join("base"), device)
        .unwrap_or_else(|e| panic!("{family}: {e}"))
}

fn expected_logits(dir: &Path) -> Vec<f64> {
    read_tensor(&dir.join("expected.safetensors"), "logits").1
}

fn logits(model: &LlamaModel, device: &Device) -> Vec<f32> {
    values(model.try_forward(decoder_inputs(device)).unwrap())
}

#[test]
fn the_fixture_families_are_all_there() {
    let mut found: Vec<String> = std::fs::read_dir(fixtures().join("decoder"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    found.sort();
    // GPT-2 runs its own cases (tests/gpt2.rs).
    let mut expected: Vec<&str> = FAMILIES.iter().copied().chain(["gpt2"]).collect();
    expected.sort();
    assert_eq!(found, expected);
}

#[test]
fn base_logits_match_transformers() {
    let device = device();
    for family in FAMILIES {
        let model = base(family, &device);
        let delta = max_abs_diff(
            &logits(&model, &device),
            &expected_logits(&family_dir(family)),
        );
        println!("{family:<18} base logits max |Δ| = {delta:.2e}");
        assert!(delta <= TOLERANCE, "{family}: max |Δ| = {delta:e}");
    }
}

#[test]
fn every_method_matches_adapterhub_on_every_family() {
    let device = device();
    let mut worst = 0.0f64;
    let mut runs = 0;
    for family in FAMILIES {
        let listed: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(family_dir(family).join("cases/cases.json")).unwrap(),
        )
        .unwrap();
        for case in case_dirs(&format!("decoder/{family}/cases")) {
            let label = format!("{family}/{}", case.file_name().unwrap().to_string_lossy());
            let mut model = base(family, &device);
            let name = model
                .load_adapter(&case)
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            model.set_active_adapters(name.as_str()).unwrap();
            let delta = max_abs_diff(&logits(&model, &device), &expected_logits(&case));
            println!("{label:<28} max |Δ| = {delta:.2e}");
            assert!(delta <= TOLERANCE, "{label}: max |Δ| = {delta:e}");
            worst = worst.max(delta);
            runs += 1;

            let entry = listed
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name.as_str())
                .unwrap();
            assert_eq!(
                model.adapter_summary().adapters[0].num_params as u64,
                entry["num_params"].as_u64().unwrap(),
                "{label}: parameter count"
            );
        }
    }
    assert_eq!(
        runs,
        FAMILIES.len() * 5,
        "every family runs the generator's 5 cases"
    );
    println!("{runs} decoder cases, worst max |Δ| = {worst:.2e}");
}

/// Every fixture adapter, saved from Rust, reloads here with the same logits; when
/// `BURN_ADAPTERS_EXPORT_DECODER` names a directory, the files and the logits are written to
/// `<dir>/<family>/<case>` for `tools/check_rust_decoder_adapters.py`.
#[test]
fn rust_saved_decoder_adapters_reload_exactly() {
    let device = device();
    let export = std::env::var_os("BURN_ADAPTERS_EXPORT_DECODER").map(PathBuf::from);
    let scratch = tempfile::tempdir().unwrap();
    let root = export.unwrap_or_else(|| scratch.path().to_path_buf());
    for family in FAMILIES {
        let base = base(family, &device);
        for case in case_dirs(&format!("decoder/{family}/cases")) {
            let mut model = base.clone();
            let name = model.load_adapter(&case).unwrap();
            model.set_active_adapters(name.as_str()).unwrap();
            let out = root.join(family).join(&name);
            model.save_adapter(&out, &name).unwrap();
            let before = model.forward(decoder_inputs(&device));

            let mut reloaded = base.clone();
            reloaded.load_adapter(&out).unwrap();
            reloaded.set_active_adapters(name.as_str()).unwrap();
            let after = reloaded.forward(decoder_inputs(&device));
            let dims = before.dims();
            let before = values(before);
            assert_eq!(before, values(after), "{family}/{name}");
            write_f32(&out.join("expected.safetensors"), "logits", &before, &dims);
        }
    }
}

/// PEFT LoRAs on every family load with PEFT's logits, and what Rust saves in PEFT's format
/// reloads exactly (written for `tools/check_rust_decoder_adapters.py` under
/// `BURN_ADAPTERS_EXPORT_DECODER`, like the AdapterHub files).
#[test]
fn peft_loras_on_decoders_match_peft_and_save_back() {
    let device = device();
    let export = std::env::var_os("BURN_ADAPTERS_EXPORT_DECODER").map(PathBuf::from);
    let scratch = tempfile::tempdir().unwrap();
    let root = export.unwrap_or_else(|| scratch.path().to_path_buf());
    let mut runs = 0;
    for family in FAMILIES {
        let base = base(family, &device);
        for case in case_dirs(&format!("decoder/{family}/peft")) {
            let name = case.file_name().unwrap().to_string_lossy().into_owned();
            let mut model = base.clone();
            model
                .load_peft_adapter(&case, &name)
                .unwrap_or_else(|e| panic!("{family}/{name}: {e}"));
            model.set_active_adapters(name.as_str()).unwrap();
            let got = model.forward(decoder_inputs(&device));
            let out = root.join(family).join(&name);
            model.save_peft_adapter(&out, &name).unwrap();
            let dims = got.dims();
            let logits = values(got.clone());
            write_f32(&out.join("expected.safetensors"), "logits", &logits, &dims);
            let delta = max_abs_diff(&values(got.clone()), &expected_logits(&case));
            println!("{family}/{name:<14} PEFT max |Δ| = {delta:.2e}");
            assert!(delta <= TOLERANCE, "{family}/{name}: max |Δ| = {delta:e}");

            let mut reloaded = base.clone();
            reloaded.load_peft_adapter(&out, &name).unwrap();
            reloaded.set_active_adapters(name.as_str()).unwrap();
            assert_eq!(
                values(got),
                values(reloaded.forward(decoder_inputs(&device)))
            );
            runs += 1;
        }
    }
    assert_eq!(runs, FAMILIES.len() * 3);
}

/// LoRA on `o_proj` and `gate_proj` (PEFT places them; AdapterHub 1.3.0 does not): the config
/// extensions `attn_matrices` "o" and `gate_lora` place them natively, merge exactly, and save in
/// PEFT's format only.
#[test]
fn loras_on_the_attention_output_and_the_gate_merge_and_save_as_peft_only() {
    let device = device();
    let scratch = tempfile::tempdir().unwrap();
    let mut model = base("llama", &device);
    let config = AdapterConfig::load(r#"lora[r=4,attn_matrices=["q","o"],gate_lora=True]"#);
    model.add_adapter("og", config.unwrap()).unwrap();
    let params: Vec<String> = snapshot(&model)
        .into_keys()
        .filter(|k| k.contains(".og."))
        .collect();
    for module in ["self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj"] {
        assert!(
            params.iter().any(|p| p.contains(module)),
            "{module}: {params:?}"
        );
    }
    assert_eq!(
        params.len(),
        2 * 3 * 2,
        "A and B at 3 projections in 2 layers"
    );
    // B starts at zero: make the update visible before merging.
    model
        .load_peft_adapter(family_dir("llama").join("peft/peft_o_gate"), "p")
        .unwrap();
    model.set_active_adapters("p").unwrap();
    let unmerged = logits(&model, &device);
    model.merge_adapter("p").unwrap();
    let delta = max_abs_diff(&logits(&model, &device), &as_f64(&unmerged));
    assert!(delta <= TOLERANCE, "merged: max |Δ| = {delta:e}");
    model.reset_adapter();

    for name in ["og", "p"] {
        let error = model
            .save_adapter(scratch.path().join(name), name)
            .unwrap_err();
        assert!(
            matches!(&error, Error::Unsupported(m) if m.contains("gate_lora")),
            "{error}"
        );
    }
    model
        .save_peft_adapter(scratch.path().join("og_peft"), "og")
        .unwrap();
    let saved =
        std::fs::read_to_string(scratch.path().join("og_peft/adapter_config.json")).unwrap();
    assert!(saved.contains("model.layers.0.self_attn.o_proj"), "{saved}");
    assert!(saved.contains("model.layers.1.mlp.gate_proj"), "{saved}");
}

#[test]
fn saved_adapters_carry_adapterhubs_names_and_reload_exactly() {
    let device = device();
    let scratch = tempfile::tempdir().unwrap();
    for case in ["seq_bn", "lora_all"] {
        let reference = case_dir("qwen2", case);
        let mut model = base("qwen2", &device);
        let name = model.load_adapter(&reference).unwrap();
        let dir = scratch.path().join(case);
        model.save_adapter(&dir, &name).unwrap();
        let keys = |dir: &Path| {
            let bytes = std::fs::read(dir.join("adapter.safetensors")).unwrap();
            let mut keys: Vec<String> = safetensors::SafeTensors::deserialize(&bytes)
                .unwrap()
                .names()
                .into_iter()
                .map(str::to_string)
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(&dir), keys(&reference), "{case}: tensor names");
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(config["model_type"], "qwen2");
        assert_eq!(config["model_class"], "Qwen2ForCausalLM");

        let mut reloaded = base("qwen2", &device);
        reloaded.load_adapter(&dir).unwrap();
        reloaded.set_active_adapters(name.as_str()).unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
        assert_eq!(
            logits(&reloaded, &device),
            logits(&model, &device),
            "{case}"
        );
    }
}

/// Runs `input` in pieces of `steps` positions through a cache and joins the logits.
fn cached_logits(model: &LlamaModel, input: &DecoderInput, steps: &[usize]) -> Tensor<3> {
    let mut cache = KvCache::new();
    let mut start = 0;
    let mut pieces = Vec::new();
    for &len in steps {
        let piece = DecoderInput::new(
            input.input_ids.clone().narrow(1, start, len),
            input.attention_mask.clone().unwrap().narrow(1, start, len),
        );
        pieces.push(model.try_forward_cached(piece, &mut cache).unwrap());
        start += len;
    }
    assert_eq!(cache.len(), start);
    Tensor::cat(pieces, 1)
}

#[test]
fn incremental_decoding_equals_a_full_run_with_and_without_adapters() {
    let device = device();
    // Mistral's window (4) is shorter than the input, so the cache must respect it too.
    for family in ["llama", "mistral"] {
        let mut model = base(family, &device);
        let input = decoder_inputs(&device);
        let full = at_tokens(model.forward(input.clone()), &input);
        let cached = at_tokens(cached_logits(&model, &input, &[3, 1, 1, 1, 1]), &input);
        let delta = max_abs_diff_tensors(cached, full);
        assert!(delta <= TOLERANCE, "{family} base: max |Δ| = {delta:e}");

        for case in ["seq_bn", "lora_all"] {
            let name = model.load_adapter(case_dir(family, case)).unwrap();
            model.set_active_adapters(name.as_str()).unwrap();
            let full = at_tokens(model.forward(input.clone()), &input);
            let cached = at_tokens(cached_logits(&model, &input, &[4, 2, 1]), &input);
            let delta = max_abs_diff_tensors(cached, full);
            assert!(delta <= TOLERANCE, "{family} {case}: max |Δ| = {delta:e}");
        }
    }
}

#[test]
fn inputs_a_decoder_cannot_run_are_errors_and_leave_the_cache_alone() {
    let device = device();
    let model = LlamaConfig::tiny().init(&device).unwrap();
    let ids = |rows: Vec<Vec<i64>>| {
        let (batch, seq) = (rows.len(), rows.first().map_or(0, Vec::len));
        let flat: Vec<i64> = rows.into_iter().flatten().collect();
        Tensor::<2, Int>::from_data(burn::tensor::TensorData::new(flat, [batch, seq]), &device)
    };
    let refuse = |input: DecoderInput, cache: &mut KvCache, what: &str| {
        let before = cache.len();
        match model.try_forward_cached(input, cache) {
            Err(Error::InvalidInput { input, reason }) => {
                assert_eq!(input, what, "{reason}");
                assert_eq!(cache.len(), before);
            }
            other => panic!("expected InvalidInput for {what}, got {other:?}"),
        }
    };
    let mut cache = KvCache::new();
    refuse(
        DecoderInput::ids(ids(vec![vec![]])),
        &mut cache,
        "input_ids",
    );
    refuse(
        DecoderInput::ids(ids(vec![vec![3, 61]])),
        &mut cache,
        "input_ids",
    );
    refuse(
        DecoderInput::ids(ids(vec![vec![-1, 3]])),
        &mut cache,
        "input_ids",
    );
    let too_long = vec![vec![3; 2049]];
    refuse(DecoderInput::ids(ids(too_long)), &mut cache, "input_ids");
    let mut masked = DecoderInput::new(ids(vec![vec![3, 4]]), ids(vec![vec![1, 1, 1]]));
    refuse(masked.clone(), &mut cache, "attention_mask");
    masked.attention_mask = None;
    masked.position_ids = Some(ids(vec![vec![0, 4000]]));
    refuse(masked, &mut cache, "position_ids");

    model
        .try_forward_cached(DecoderInput::ids(ids(vec![vec![3, 4]])), &mut cache)
        .unwrap();
    refuse(
        DecoderInput::ids(ids(vec![vec![3], vec![4]])),
        &mut cache,
        "input_ids",
    );
    let rest = vec![vec![3; 2047]];
    refuse(DecoderInput::ids(ids(rest)), &mut cache, "input_ids");
    assert_eq!(cache.len(), 2);
}

#[test]
fn configs_a_host_cannot_run_are_refused_naming_the_field() {
    let scratch = tempfile::tempdir().unwrap();
    let base_config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(family_dir("llama").join("base/config.json")).unwrap(),
    )
    .unwrap();
    let cases = [
        ("model_type", serde_json::json!("gpt_neox"), "model_type"),
        (
            "rope_scaling",
            serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
            "rope_scaling",
        ),
        (
            "num_key_value_heads",
            serde_json::json!(3),
            "num_key_value_heads",
        ),
        ("hidden_act", serde_json::json!("wiggle"), "hidden_act"),
    ];
    for (key, value, field) in cases {
        let mut config = base_config.clone();
        config[key] = value;
        let path = scratch.path().join("config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        match LlamaConfig::from_file(&path) {
            Err(Error::Json { field: named, .. }) => assert_eq!(named, field, "{key}"),
            other => panic!("{key}: expected a JSON error, got {other:?}"),
        }
    }
}

#[test]
fn greedy_generation_matches_transformers() {
    let device = device();
    let config = GenerationConfig::new(20)
        .with_stop_tokens(vec![2])
        .with_pad_token_id(0);
    let mut streamed = 0;
    for family in FAMILIES {
        let mut model = base(family, &device);
        for case in ["", "seq_bn", "lora_all"] {
            let dir = match case {
                "" => family_dir(family),
                case => case_dir(family, case),
            };
            if !case.is_empty() {
                let name = model.load_adapter(&dir).unwrap();
                model.set_active_adapters(name.as_str()).unwrap();
            }
            let input = decoder_inputs(&device);
            let tokens = generate(
                &model,
                input.input_ids,
                input.attention_mask.unwrap(),
                &config,
                |_, _| streamed += 1,
            )
            .unwrap();
            assert_eq!(tokens, reference_tokens(&dir), "{family} {case}");
        }
    }
    assert!(
        streamed >= FAMILIES.len() * 3 * 2,
        "the callback saw every token"
    );
}

#[test]
fn seeded_sampling_is_reproducible() {
    let device = device();
    let model = base("llama", &device);
    let input = decoder_inputs(&device);
    let sampling = Sampling::Sample {
        temperature: 0.8,
        top_k: Some(20),
        top_p: Some(0.9),
    };
    let run = |seed: u64| {
        let config = GenerationConfig::new(12)
            .with_sampling(sampling.clone())
            .with_seed(seed);
        let (ids, mask) = (
            input.input_ids.clone(),
            input.attention_mask.clone().unwrap(),
        );
        generate(&model, ids, mask, &config, |_, _| {}).unwrap()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8), "different seeds draw different tokens");
    let bad = GenerationConfig::new(3).with_sampling(Sampling::Sample {
        temperature: 0.0,
        top_k: None,
        top_p: None,
    });
    let error = generate(
        &model,
        input.input_ids.clone(),
        input.attention_mask.clone().unwrap(),
        &bad,
        |_, _| {},
    )
    .unwrap_err();
    assert!(
        matches!(&error, Error::InvalidConfig { field, .. } if field == "temperature"),
        "{error}"
    );
    let empty = Tensor::<2, Int>::zeros([1, 0], &device);
    let error = generate(
        &model,
        empty.clone(),
        empty,
        &GenerationConfig::new(3),
        |_, _| {},
    );
    assert!(matches!(error, Err(Error::InvalidInput { .. })));
    // the fixture's context is 64 positions: 7 + 58 - 1 fit, 7 + 59 - 1 do not
    let (ids, mask) = (
        input.input_ids.clone(),
        input.attention_mask.clone().unwrap(),
    );
    let fits = generate(
        &model,
        ids.clone(),
        mask.clone(),
        &GenerationConfig::new(58),
        |_, _| {},
    );
    assert_eq!(fits.unwrap()[0].len(), 58);
    let error = generate(&model, ids, mask, &GenerationConfig::new(59), |_, _| {}).unwrap_err();
    assert!(
        matches!(&error, Error::InvalidInput { input, .. } if input == "max_new_tokens"),
        "{error}"
    );
}

#[test]
fn causal_lm_loss_matches_transformers() {
    let device = device();
    let mut runs = 0;
    for family in FAMILIES {
        let mut dirs = vec![family_dir(family)];
        dirs.extend(case_dirs(&format!("decoder/{family}/cases")));
        for dir in dirs {
            let mut model = base(family, &device);
            if dir != family_dir(family) {
                let name = model.load_adapter(&dir).unwrap();
                model.set_active_adapters(name.as_str()).unwrap();
            }
            let input = decoder_inputs(&device);
            let labels = input.input_ids.clone().mask_fill(
                input.attention_mask.clone().unwrap().equal_elem(0),
                IGNORE_INDEX,
            );
            let loss = causal_lm_loss(model.forward(input), labels).unwrap();
            let want = read_tensor(&dir.join("expected.safetensors"), "loss").1;
            let delta = max_abs_diff(&values(loss), &want);
            assert!(
                delta <= TOLERANCE,
                "{}: loss |Δ| = {delta:e}",
                dir.display()
            );
            runs += 1;
        }
    }
    assert_eq!(runs, FAMILIES.len() * 6);
}

#[test]
fn causal_lm_loss_refuses_labels_it_cannot_use() {
    let device = device();
    let logits = Tensor::<3>::zeros([1, 3, 5], &device);
    let labels = |values: [i64; 3]| Tensor::<2, Int>::from_ints([values], &device);
    for bad in [[0, 5, 1], [0, -1, 1]] {
        let error = causal_lm_loss(logits.clone(), labels(bad)).unwrap_err();
        assert!(
            matches!(&error, Error::InvalidInput { input, .. } if input == "labels"),
            "{error}"
        );
    }
    let short = Tensor::<3>::zeros([1, 1, 5], &device);
    assert!(causal_lm_loss(short, Tensor::<2, Int>::from_ints([[1]], &device)).is_err());
    // uniform logits over 5 tokens: every counted position costs ln 5; the first label is never
    // predicted and -100 is skipped
    let loss = causal_lm_loss(logits, labels([IGNORE_INDEX, 2, IGNORE_INDEX])).unwrap();
    assert!((values(loss)[0] as f64 - 5f64.ln()).abs() < 1e-6);
}

#[test]
fn train_adapter_trains_a_decoder_and_leaves_its_base_alone() {
    let device = device().autodiff();
    let mut model = base("llama", &device);
    model
        .add_adapter("task", AdapterConfig::load("seq_bn|lora[r=4]").unwrap())
        .unwrap();
    model.train_adapter("task").unwrap();
    let before = frozen(&model, "task");
    let (model, losses) = train_steps(model, LlamaModel::forward, &device);
    assert!(
        losses[19] < 0.8 * losses[0],
        "the loss fell from {} to {}",
        losses[0],
        losses[19]
    );
    let after = frozen(&model, "task");
    let changed: Vec<&String> = before.keys().filter(|k| before[*k] != after[*k]).collect();
    assert!(changed.is_empty(), "base parameters changed: {changed:?}");
    assert_eq!(after.len(), 21, "every base tensor was compared");
}

#[test]
fn each_row_generates_with_its_own_adapter() {
    let device = device();
    let cases = family_dir("qwen2").join("cases");
    check_per_row_generation(base("qwen2", &device), &cases, &device);
}

/// The fixture's base weights of `family`, each tensor through `convert` (f32 bytes in, a dtype
/// and bytes out), split into `shards` files with an index when `shards > 1`.
fn rewrite_weights(
    family: &str,
    dir: &Path,
    shards: usize,
    convert: impl Fn(&[u8]) -> (safetensors::Dtype, Vec<u8>),
) {
    let base = family_dir(family).join("base");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(base.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(base.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let (dtype, data) = convert(view.data());
            (name, dtype, view.shape().to_vec(), data)
        })
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut weight_map = serde_json::Map::new();
    for (shard, chunk) in tensors.chunks(tensors.len().div_ceil(shards)).enumerate() {
        let name = match shards {
            1 => "model.safetensors".to_string(),
            n => format!("model-{:05}-of-{n:05}.safetensors", shard + 1),
        };
        let views: Vec<(String, safetensors::tensor::TensorView)> = chunk
            .iter()
            .map(|(key, dtype, shape, data)| {
                weight_map.insert(key.clone(), name.clone().into());
                let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data);
                (key.clone(), view.unwrap())
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(&name)).unwrap();
    }
    if shards > 1 {
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
}

fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
}

#[test]
fn sharded_and_half_precision_checkpoints_load() {
    let device = device();
    let scratch = tempfile::tempdir().unwrap();
    let same = |bytes: &[u8]| (safetensors::Dtype::F32, bytes.to_vec());
    let sharded = scratch.path().join("sharded");
    rewrite_weights("mistral", &sharded, 3, same);
    assert!(!sharded.join("model.safetensors").exists());
    let single = logits(&base("mistral", &device), &device);
    let model = LlamaModel::from_pretrained(&sharded, &device).unwrap();
    assert_eq!(
        logits(&model, &device),
        single,
        "three shards load as one file"
    );

    // A bf16 checkpoint computes what the f32 model with bf16-rounded weights computes.
    let to_bf16 = |bytes: &[u8]| {
        let data = f32s(bytes)
            .flat_map(|v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        (safetensors::Dtype::BF16, data)
    };
    let rounded = |bytes: &[u8]| {
        let data = f32s(bytes)
            .flat_map(|v| half::bf16::from_f32(v).to_f32().to_le_bytes())
            .collect();
        (safetensors::Dtype::F32, data)
    };
    let (bf16, reference) = (scratch.path().join("bf16"), scratch.path().join("rounded"));
    rewrite_weights("mistral", &bf16, 1, to_bf16);
    rewrite_weights("mistral", &reference, 1, rounded);
    let half = LlamaModel::from_pretrained(&bf16, &device).unwrap();
    let want = LlamaModel::from_pretrained(&reference, &device).unwrap();
    let delta = max_abs_diff_tensors(
        half.forward(decoder_inputs(&device)),
        want.forward(decoder_inputs(&device)),
    );
    assert_eq!(delta, 0.0, "bf16 weights are read as f32");
}

#[test]
fn adapters_for_another_shape_are_refused_naming_the_tensor() {
    // Mistral's fixture has head_dim 16 (q_proj 32 → 64); Llama's has 8 (32 → 32).
    let device = device();
    let mut llama = base("llama", &device);
    let error = llama
        .load_adapter(case_dir("mistral", "lora_all"))
        .unwrap_err();
    assert!(
        matches!(&error, Error::ShapeMismatch { key, .. } if key.contains("q_proj.loras.lora_all.lora_B")),
        "{error}"
    );
    assert!(
        !llama.has_adapter("lora_all"),
        "a failed load leaves nothing behind"
    );
    let peft = family_dir("mistral").join("peft/peft_qv");
    let error = llama.load_peft_adapter(&peft, "p").unwrap_err();
    assert!(
        matches!(&error, Error::ShapeMismatch { key, .. } if key.contains("q_proj.lora_B")),
        "{error}"
    );
    assert!(!llama.has_adapter("p"));
}

#[test]
fn adapter_fusion_on_a_llama_matches_adapterhub() {
    let device = device();
    let delta = fusion_delta(
        base("llama", &device),
        "llama",
        LlamaModel::forward,
        &device,
    );
    println!("llama Fuse[fa, fb] max |Δ| = {delta:.2e}");
    assert!(delta <= TOLERANCE, "max |Δ| = {delta:e}");
}
