//! VeRA and DVoRA against AdapterHub (`tools/gen_fixtures_vera.py`) on BERT, Llama and GPT-2:
//! outputs, parameter counts, cached generation, files both ways, merging, training (the
//! shared matrices stay frozen) and bad configs.

mod common;

use std::path::PathBuf;

use burn::tensor::Device;
use burn_adapters::config::LoRAConfig;
use burn_adapters::model::{AverageStrategy, Combination};
use burn_adapters::models::bert::BertModel;
use burn_adapters::models::gpt2::Gpt2Model;
use burn_adapters::models::llama::LlamaModel;
use burn_adapters::prelude::*;
use common::decoder::*;
use common::families::{
    Family, cases_match_reference, export_root, generates_as_reference, listed_cases,
    merge_computes_the_same_and_resets, moved, rust_saved_cases_reload,
};
use common::snapshot::snapshot;
use common::*;

const TOLERANCE: f64 = 1e-5;
const BERT_CASES: usize = 3;
const LLAMA_CASES: usize = 2;
const GPT2_CASES: usize = 1;

fn case_dir<F: Family>(case: &str) -> PathBuf {
    fixtures().join("vera").join(F::NAME).join(case)
}

#[test]
fn presets_match_adapterhubs() {
    let presets: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("vera/presets.json")).unwrap(),
    )
    .unwrap();
    for (name, expected) in presets.as_object().unwrap() {
        assert_eq!(
            &AdapterConfig::load(name).unwrap().to_json(),
            expected,
            "{name}"
        );
    }
    assert_eq!(
        AdapterConfig::load("vera").unwrap(),
        LoRAConfig::vera().into()
    );
    assert_eq!(
        AdapterConfig::load("dvora").unwrap(),
        LoRAConfig::dvora().into()
    );
}

#[test]
fn bert_vera_matches_adapterhub() {
    cases_match_reference::<BertModel>("vera", BERT_CASES, TOLERANCE, &device());
}

#[test]
fn llama_vera_matches_adapterhub() {
    cases_match_reference::<LlamaModel>("vera", LLAMA_CASES, TOLERANCE, &device());
}

#[test]
fn gpt2_vera_matches_adapterhub() {
    cases_match_reference::<Gpt2Model>("vera", GPT2_CASES, TOLERANCE, &device());
}

#[test]
fn generation_with_vera_matches_transformers() {
    let device = device();
    for (_, _, dir) in listed_cases::<LlamaModel>("vera", LLAMA_CASES) {
        generates_as_reference::<LlamaModel>(&dir, &device);
    }
    for (_, _, dir) in listed_cases::<Gpt2Model>("vera", GPT2_CASES) {
        generates_as_reference::<Gpt2Model>(&dir, &device);
    }
}

/// Rust-saved files reload the same; under `BURN_ADAPTERS_EXPORT_VERA` they go to
/// `<dir>/bert/<case>` and `<dir>/decoder/<family>/<case>` for the Python checkers.
#[test]
fn rust_saved_vera_reloads_exactly() {
    let (_scratch, root) = export_root("BURN_ADAPTERS_EXPORT_VERA");
    let device = device();
    rust_saved_cases_reload::<BertModel>("vera", BERT_CASES, &root, &device);
    rust_saved_cases_reload::<LlamaModel>("vera", LLAMA_CASES, &root, &device);
    rust_saved_cases_reload::<Gpt2Model>("vera", GPT2_CASES, &root, &device);
}

#[test]
fn merged_vera_computes_the_same_and_resets_exactly() {
    let device = device();
    for case in ["vera", "vera_ffn", "dvora"] {
        let mut bert = BertModel::base(&device);
        bert.load_adapter(case_dir::<BertModel>(case)).unwrap();
        bert.set_active_adapters(case).unwrap();
        merge_computes_the_same_and_resets(&mut bert, case, &device);
    }
    let mut gpt2 = Gpt2Model::base(&device);
    gpt2.load_adapter(case_dir::<Gpt2Model>("vera_ffn"))
        .unwrap();
    gpt2.set_active_adapters("vera_ffn").unwrap();
    merge_computes_the_same_and_resets(&mut gpt2, "vera_ffn", &device);
}

/// Every module of an adapter cuts its `A` and `B` from the same draw: a layer as wide as
/// another gets the same matrices, a narrower one their leading rows and columns.
#[test]
fn modules_share_one_draw() {
    let device = device();
    let mut model = LlamaModel::base(&device);
    // q_proj is 32 → 32, v_proj 32 → 16 (grouped-query attention), up_proj 32 → 48
    let config = "vera[r=4,intermediate_lora=True,init_weights_seed=9]";
    model
        .add_adapter("v", AdapterConfig::load(config).unwrap())
        .unwrap();
    let factors: Vec<(String, [Vec<f32>; 2], [usize; 2])> = snapshot_factors(&model);
    let (widest_a, widest_b) = factors.iter().fold((0, 0), |(a, b), (_, [fa, fb], _)| {
        (a.max(fa.len()), b.max(fb.len()))
    });
    let full_a = &factors.iter().find(|f| f.1[0].len() == widest_a).unwrap().1[0];
    let full_b = &factors.iter().find(|f| f.1[1].len() == widest_b).unwrap().1[1];
    let r = 4;
    for (path, [a, b], [d_input, d_output]) in &factors {
        // A is [d_input, r]: its rows are the leading ones; B is [r, d_output]: leading columns
        assert_eq!(a[..], full_a[..d_input * r], "{path}: A");
        let max_output = widest_b / r;
        for row in 0..r {
            let got = &b[row * d_output..(row + 1) * d_output];
            let want = &full_b[row * max_output..row * max_output + d_output];
            assert_eq!(got, want, "{path}: B row {row}");
        }
    }
    assert!(factors.len() >= 6, "{}", factors.len());
}

/// (path, [A, B] values, [d_input, d_output]) of every LoRA module, from the parameter snapshot.
fn snapshot_factors<M: burn::module::Module>(
    model: &M,
) -> Vec<(String, [Vec<f32>; 2], [usize; 2])> {
    let values = snapshot(model);
    let shapes = common::snapshot::shapes(model);
    values
        .iter()
        .filter(|(path, _)| path.ends_with(".v.lora_a"))
        .map(|(path, a)| {
            let stem = path.trim_end_matches("lora_a");
            let b = values[&format!("{stem}lora_b")].clone();
            let [d_input, _] = <[usize; 2]>::try_from(shapes[path].as_slice()).unwrap();
            let [_, d_output] =
                <[usize; 2]>::try_from(shapes[&format!("{stem}lora_b")].as_slice()).unwrap();
            (path.clone(), [a.clone(), b], [d_input, d_output])
        })
        .collect()
}

/// Training moves `d`, `b` (and DVoRA's magnitude), never the shared matrices, even with the
/// whole model unfrozen.
#[test]
fn training_moves_only_the_vectors() {
    let device = Device::flex().autodiff();
    for (config, parts) in [
        ("vera[r=2,vera_b=0.5]", &["vera.d", "vera.b"][..]),
        (
            "dvora[r=2,vera_b=0.5]",
            &["vera.d", "vera.b", "magnitude"][..],
        ),
    ] {
        let mut model =
            LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), &device).unwrap();
        model
            .add_adapter("v", AdapterConfig::load(config).unwrap())
            .unwrap();
        assert_projections_frozen(&model, config);
        model.train_adapter("v").unwrap();
        let before = snapshot(&model);
        let (model, losses) = train_steps(model, |m, input| m.forward(input), &device);
        assert!(losses.last() < losses.first(), "{config}: {losses:?}");
        let moved = moved(&before, &model);
        for path in &moved {
            assert!(path.contains(".v."), "{config}: {path} moved");
            assert!(
                !path.ends_with("lora_a") && !path.ends_with("lora_b"),
                "{path}"
            );
        }
        for part in parts {
            assert!(moved.iter().any(|p| p.contains(part)), "{part}: {moved:?}");
        }
    }
    let mut model =
        LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), &device).unwrap();
    model
        .add_adapter("v", AdapterConfig::load("vera[vera_b=0.5]").unwrap())
        .unwrap();
    model.freeze_model(false);
    assert_projections_frozen(&model, "freeze_model(false)");
    // a loaded VeRA starts frozen too
    let mut loaded =
        LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), &device).unwrap();
    loaded.load_adapter(case_dir::<LlamaModel>("vera")).unwrap();
    assert_projections_frozen(&loaded, "load_adapter");
    let before = snapshot(&model);
    let (model, _) = train_steps(model, |m, input| m.forward(input), &device);
    let moved = moved(&before, &model);
    assert!(
        moved.iter().any(|p| !p.contains(".v.")),
        "the base trains too"
    );
    assert!(
        !moved
            .iter()
            .any(|p| p.ends_with("lora_a") || p.ends_with("lora_b")),
        "{moved:?}"
    );
}

/// The shared matrices do not require gradients; the vectors do.
fn assert_projections_frozen<M: burn::module::Module>(model: &M, label: &str) {
    let trainable = common::snapshot::trainable(model);
    let frozen = |p: &String| p.ends_with("lora_a") || p.ends_with("lora_b");
    assert!(!trainable.iter().any(frozen), "{label}: {trainable:?}");
    assert!(
        trainable.iter().any(|p| p.ends_with("vera.d")),
        "{label}: {trainable:?}"
    );
}

#[test]
fn bad_vera_configs_are_errors_naming_the_field() {
    configs_refused_naming_the_field(&[
        ("vera[vera_b=None]", "vera_b"),
        ("lora[vera_d=0.1]", "vera_b"),
        (
            "vera[composition_mode=scale,r=1,init_weights=lora]",
            "composition_mode",
        ),
        ("mtl_lora[vera_d=0.1,vera_b=0.0]", "architecture"),
        ("ia3[init_weights=vera]", "init_weights"),
    ]);
    let device = device();
    // no VeRA on GPT-2's fused c_attn in AdapterHub's per-block form
    let mut gpt2 = Gpt2Model::base(&device);
    let err = gpt2
        .add_adapter("v", AdapterConfig::load("vera").unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(!gpt2.has_adapter("v"));
    // VeRAs average linearly only (AdapterHub's rule), and PEFT's merges are for LoRAs
    let mut bert = BertModel::base(&device);
    for name in ["a", "b"] {
        bert.add_adapter(name, AdapterConfig::load("vera").unwrap())
            .unwrap();
    }
    let sources = [("a", 0.5), ("b", 0.5)];
    let err = bert
        .average_adapter("avg", &sources, AverageStrategy::LoraDeltaWSvd { rank: 2 })
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidSetup(m) if m.contains("VeRA")),
        "{err}"
    );
    let err = bert
        .add_weighted_adapter("w", &sources, Combination::Cat)
        .unwrap_err();
    assert!(err.to_string().contains("VeRA"), "{err}");
    assert!(!bert.has_adapter("avg") && !bert.has_adapter("w"));
    bert.average_adapter("avg", &sources, AverageStrategy::Linear)
        .unwrap();
}

/// AdapterHub's shared matrices serve one shape: a VeRA over layers of several shapes does not
/// save in its format (the error names both layers); AdapterHub's whole trained matrices are
/// refused on load, naming the tensor.
#[test]
fn what_adapterhubs_vera_cannot_hold_is_refused() {
    let device = device();
    let mut model = LlamaModel::base(&device);
    model
        .add_adapter("v", AdapterConfig::load("vera").unwrap())
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let err = model
        .save_adapter(scratch.path().join("v"), "v")
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("q_proj") && m.contains("v_proj")),
        "{err}"
    );
    assert!(!scratch.path().join("v").exists());

    // an off-diagonal entry in vera_B, as adapters 1.3.0's training leaves
    let (_copy, dir) = copy_fixture("vera/bert/vera");
    let file = dir.join("adapter.safetensors");
    let key = "encoder.layer.0.attention.self.query.loras.vera.vera_B";
    edit_tensor(&file, key, |values| values[1] = 0.25);
    let mut bert = BertModel::base(&device);
    let err = bert.load_adapter(&dir).unwrap_err();
    assert!(err.to_string().contains(key), "{err}");
    assert!(!bert.has_adapter("vera"));
}

/// Loads `dir` (a PEFT VeRA) into a fresh `F` as `p`, checks its output against the fixture's,
/// saves it back as PEFT into `out` and checks the reload is bit-exact.
fn peft_vera_round_trip<F: Family>(dir: &std::path::Path, out: &std::path::Path, device: &Device) {
    let mut model = F::base(device);
    model.load_peft_adapter(dir, "p").unwrap();
    let config = model.adapter_config("p").unwrap().lora().unwrap().clone();
    assert!(config.is_vera() && config.scaling() == 1.0, "{config:?}");
    model.set_active_adapters("p").unwrap();
    let expected = dir.join("expected.safetensors");
    let d = common::families::deviation::<F>(model.output(device), &expected, F::OUTPUT, device);
    println!("{}: max |Δ| {d:.2e}", dir.display());
    assert!(d <= TOLERANCE, "{}: {d}", dir.display());
    save_peft_and_reload(&model, "p", out, device, 0.0);
}

/// Saves adapter `name` of `model` as PEFT into `out` (with `expected.safetensors` for the
/// Python checkers) and reloads it: outputs within `tolerance`.
fn save_peft_and_reload<F: Family>(
    model: &F,
    name: &str,
    out: &std::path::Path,
    device: &Device,
    tolerance: f64,
) {
    model.save_peft_adapter(out, name).unwrap();
    let mut again = F::base(device);
    again.load_peft_adapter(out, name).unwrap();
    again.set_active_adapters(name).unwrap();
    let before = model.output(device);
    let dims = before.dims();
    let d = max_abs_diff_tensors(again.output(device), before.clone());
    assert!(d <= tolerance, "{name}: {d}");
    write_f32(
        &out.join("expected.safetensors"),
        F::OUTPUT,
        &values(before),
        &dims,
    );
}

/// PEFT's VeRA files (matrices sliced per layer shape) load with PEFT's outputs and save back
/// bit-exactly; an AdapterHub VeRA (scaling `alpha / r` = 2, which PEFT's VeRA lacks: `b`
/// carries it) and one over layers of several shapes save as PEFT too. Under
/// `BURN_ADAPTERS_EXPORT_PEFT` the BERT files go there for `tools/check_peft_import.py`, the
/// Llama ones to `BURN_ADAPTERS_EXPORT_DECODER`'s `llama/` for the decoder checker.
#[test]
fn peft_vera_files_both_ways() {
    let device = device();
    let (_bert_scratch, bert_root) = export_root("BURN_ADAPTERS_EXPORT_PEFT");
    let (_decoder_scratch, decoder_root) = export_root("BURN_ADAPTERS_EXPORT_DECODER");
    let peft = fixtures().join("peft_vera");
    peft_vera_round_trip::<BertModel>(
        &peft.join("bert_vera"),
        &bert_root.join("vera_peft"),
        &device,
    );
    peft_vera_round_trip::<LlamaModel>(
        &peft.join("llama_vera"),
        &decoder_root.join("llama").join("vera_peft"),
        &device,
    );

    let mut bert = BertModel::base(&device);
    bert.load_adapter(case_dir::<BertModel>("vera")).unwrap();
    bert.set_active_adapters("vera").unwrap();
    save_peft_and_reload(
        &bert,
        "vera",
        &bert_root.join("vera_from_adapterhub"),
        &device,
        1e-6,
    );

    let mut llama = LlamaModel::base(&device);
    let config = "vera[r=4,vera_b=0.3,intermediate_lora=True,init_weights_seed=2]";
    llama
        .add_adapter("mixed", AdapterConfig::load(config).unwrap())
        .unwrap();
    llama.set_active_adapters("mixed").unwrap();
    let out = decoder_root.join("llama").join("vera_mixed_shapes");
    save_peft_and_reload(&llama, "mixed", &out, &device, 0.0);

    // PEFT's VeRA has no DoRA
    let mut dvora = BertModel::base(&device);
    dvora.load_adapter(case_dir::<BertModel>("dvora")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let err = dvora
        .save_peft_adapter(scratch.path().join("d"), "dvora")
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("DVoRA")),
        "{err}"
    );
}
