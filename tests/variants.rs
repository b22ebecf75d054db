//! DoRA, rsLoRA, AdapterPlus and the `mam` / `unipelt` union presets against AdapterHub
//! (`tools/gen_fixtures_variants.py`) on BERT, Llama and GPT-2: outputs, parameter counts,
//! cached generation, files both ways, merging, training and bad configs.

mod common;

use std::path::PathBuf;

use burn::tensor::Device;
use burn_adapters::config::LoRAConfig;
use burn_adapters::model::AverageStrategy;
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

/// DoRA (3 cases), the two unions and AdapterPlus on BERT and Llama; GPT-2 has `mam` and
/// AdapterPlus (see the script).
const CASES: usize = 6;
const GPT2_CASES: usize = 2;

fn family_dir<F: Family>() -> PathBuf {
    fixtures().join("variants").join(F::NAME)
}

#[test]
fn presets_match_adapterhubs() {
    let presets: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("variants/presets.json")).unwrap(),
    )
    .unwrap();
    for (name, expected) in presets.as_object().unwrap() {
        let ours = match name.as_str() {
            // AdapterHub's AdapterPlusConfig has no preset name
            "adapter_plus" => AdapterConfig::from(BnConfig::adapter_plus()),
            name => AdapterConfig::load(name).unwrap(),
        };
        assert_eq!(&ours.to_json(), expected, "{name}");
    }
    assert_eq!(
        AdapterConfig::load("dora").unwrap(),
        LoRAConfig::dora().into()
    );
    assert_eq!(AdapterConfig::load("mam").unwrap(), AdapterConfig::mam());
    assert_eq!(
        AdapterConfig::load("unipelt").unwrap(),
        AdapterConfig::unipelt()
    );
}

#[test]
fn bert_variants_match_adapterhub() {
    cases_match_reference::<BertModel>("variants", CASES, TOLERANCE, &device());
}

#[test]
fn llama_variants_match_adapterhub() {
    cases_match_reference::<LlamaModel>("variants", CASES, TOLERANCE, &device());
}

#[test]
fn gpt2_variants_match_adapterhub() {
    cases_match_reference::<Gpt2Model>("variants", GPT2_CASES, TOLERANCE, &device());
}

/// UniPELT's gates average over the whole sequence, so a cached step cannot equal a recompute:
/// it is compared in full forwards only.
#[test]
fn generation_with_variants_matches_transformers() {
    let device = device();
    for (name, _, dir) in listed_cases::<LlamaModel>("variants", CASES) {
        if name != "unipelt" {
            generates_as_reference::<LlamaModel>(&dir, &device);
        }
    }
    for (_, _, dir) in listed_cases::<Gpt2Model>("variants", GPT2_CASES) {
        generates_as_reference::<Gpt2Model>(&dir, &device);
    }
}

/// Rust-saved files reload the same; under `BURN_ADAPTERS_EXPORT_VARIANTS` they go to
/// `<dir>/bert/<case>` and `<dir>/decoder/<family>/<case>` for the Python checkers.
#[test]
fn rust_saved_variants_reload_exactly() {
    let (_scratch, root) = export_root("BURN_ADAPTERS_EXPORT_VARIANTS");
    let device = device();
    rust_saved_cases_reload::<BertModel>("variants", CASES, &root, &device);
    rust_saved_cases_reload::<LlamaModel>("variants", CASES, &root, &device);
    rust_saved_cases_reload::<Gpt2Model>("variants", GPT2_CASES, &root, &device);
}

/// Merging folds `m / ‖W + ΔW‖ ⊙ (W + ΔW)` into the weights: the merged model computes the
/// unmerged output, and resetting restores every weight within 1e-6.
fn merged_dora_computes_the_same<F: Family>(model: &mut F, name: &str, device: &Device) {
    model.set_active_adapters(name).unwrap();
    merge_computes_the_same_and_resets(model, name, device);
}

#[test]
fn merged_doras_compute_the_same_and_reset_exactly() {
    let device = device();
    for case in ["dora", "dora_ffn"] {
        let mut bert = BertModel::base(&device);
        bert.load_adapter(family_dir::<BertModel>().join(case))
            .unwrap();
        merged_dora_computes_the_same(&mut bert, case, &device);
        let mut llama = LlamaModel::base(&device);
        llama
            .load_adapter(family_dir::<LlamaModel>().join(case))
            .unwrap();
        merged_dora_computes_the_same(&mut llama, case, &device);
    }
    // GPT-2's Conv1D projections (AdapterHub cannot run DoRA there): a trained-looking DoRA
    let mut gpt2 = Gpt2Model::base(&device);
    let config =
        "dora[r=2,init_weights=bert,selfattn_lora=False,intermediate_lora=True,output_lora=True]";
    gpt2.add_adapter("d", AdapterConfig::load(config).unwrap())
        .unwrap();
    merged_dora_computes_the_same(&mut gpt2, "d", &device);
}

/// A fresh DoRA leaves the output as it was (the magnitude starts at `‖W + ΔW‖`), even with
/// `init_weights = "bert"`, whose update does not start at zero.
#[test]
fn a_fresh_dora_is_its_lora() {
    let device = device();
    for init in ["lora", "bert"] {
        let mut model = LlamaModel::base(&device);
        let lora = format!("lora[r=4,alpha=16,init_weights={init},init_weights_seed=3]");
        model
            .add_adapter("l", AdapterConfig::load(&lora).unwrap())
            .unwrap();
        let dora = format!("dora[r=4,alpha=16,init_weights={init},init_weights_seed=3]");
        model
            .add_adapter("d", AdapterConfig::load(&dora).unwrap())
            .unwrap();
        model.set_active_adapters("l").unwrap();
        let lora_out = model.output(&device);
        model.set_active_adapters("d").unwrap();
        let d = max_abs_diff_tensors(model.output(&device), lora_out);
        assert!(d <= 1e-5, "{init}: max |Δ| {d}");
    }
}

/// Training moves `A`, `B` and the magnitude; nothing else.
#[test]
fn training_moves_only_the_dora() {
    let device = Device::flex().autodiff();
    let mut model =
        LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), &device).unwrap();
    let config = AdapterConfig::load("dora[r=2,init_weights=bert]").unwrap();
    model.add_adapter("d", config).unwrap();
    model.train_adapter("d").unwrap();
    let before = snapshot(&model);
    let (model, losses) = train_steps(model, |m, input| m.forward(input), &device);
    assert!(losses.last() < losses.first(), "{losses:?}");
    let moved = moved(&before, &model);
    for path in &moved {
        assert!(path.contains(".d."), "{path} moved");
    }
    for part in ["lora_a", "lora_b", "magnitude"] {
        assert!(moved.iter().any(|p| p.contains(part)), "{part}: {moved:?}");
    }
}

/// rsLoRA scales by `alpha / √r`: the same as `alpha·√r / r`, which is how AdapterHub's file
/// carries it; PEFT's keeps `use_rslora`.
#[test]
fn rslora_scales_by_the_root_of_the_rank() {
    let device = device();
    let mut model = base_model(&device);
    let rs = "lora[r=4,alpha=8,use_rslora=true,init_weights=bert,init_weights_seed=5]";
    let plain = "lora[r=4,alpha=16,init_weights=bert,init_weights_seed=5]";
    model
        .add_adapter("rs", AdapterConfig::load(rs).unwrap())
        .unwrap();
    model
        .add_adapter("plain", AdapterConfig::load(plain).unwrap())
        .unwrap();
    let output = |model: &mut BertModel, name: &str| {
        model.set_active_adapters(name).unwrap();
        values(model.forward(fixture_inputs(&device)).last_hidden_state)
    };
    let rs_out = output(&mut model, "rs");
    assert_eq!(rs_out, output(&mut model, "plain"));
    let scratch = tempfile::tempdir().unwrap();
    model
        .save_adapter(scratch.path().join("hub"), "rs")
        .unwrap();
    model
        .save_peft_adapter(scratch.path().join("peft"), "rs")
        .unwrap();
    let mut hub = base_model(&device);
    hub.load_adapter(scratch.path().join("hub")).unwrap();
    let hub_config = hub.adapter_config("rs").unwrap().lora().unwrap().clone();
    assert_eq!((hub_config.alpha, hub_config.use_rslora), (16.0, false));
    assert_eq!(output(&mut hub, "rs"), rs_out);
    let mut peft = base_model(&device);
    peft.load_peft_adapter(scratch.path().join("peft"), "rs")
        .unwrap();
    let peft_config = peft.adapter_config("rs").unwrap().lora().unwrap().clone();
    assert_eq!((peft_config.alpha, peft_config.use_rslora), (8.0, true));
    assert_eq!(output(&mut peft, "rs"), rs_out);
}

#[test]
fn bad_dora_configs_are_errors_naming_the_field() {
    configs_refused_naming_the_field(&[
        ("dora[use_gating=true]", "use_gating"),
        ("dora[composition_mode=scale,r=1]", "composition_mode"),
        ("mtl_lora[use_dora=true]", "architecture"),
        ("ia3[use_rslora=true]", "use_rslora"),
    ]);
    let device = device();
    // AdapterHub's per-block LoRA on GPT-2's fused c_attn has no DoRA
    let mut gpt2 = Gpt2Model::base(&device);
    let err = gpt2
        .add_adapter("d", AdapterConfig::load("dora").unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(!gpt2.has_adapter("d"));
    // a magnitude is not part of A, B or ΔW
    let mut bert = base_model(&device);
    for name in ["a", "b"] {
        bert.add_adapter(name, AdapterConfig::load("dora").unwrap())
            .unwrap();
    }
    let sources = [("a", 0.5), ("b", 0.5)];
    for strategy in [
        AverageStrategy::LoraLinearOnlyNegateB,
        AverageStrategy::LoraDeltaWSvd { rank: 2 },
    ] {
        let err = bert.average_adapter("avg", &sources, strategy).unwrap_err();
        assert!(matches!(err, Error::InvalidSetup(_)), "{err}");
        assert!(!bert.has_adapter("avg"));
    }
    bert.average_adapter("avg", &sources, AverageStrategy::Linear)
        .unwrap();
}

/// PEFT's DoRA files load with PEFT's outputs; ours load back bit-exactly (and, with
/// `BURN_ADAPTERS_EXPORT_PEFT`, in PEFT through `tools/check_peft_import.py`).
#[test]
fn peft_dora_files_both_ways() {
    let device = device();
    let dir = fixtures().join("peft").join("peft_dora_qv");
    let mut model = base_model(&device);
    model.load_peft_adapter(&dir, "p").unwrap();
    assert!(model.adapter_config("p").unwrap().lora().unwrap().use_dora);
    model.set_active_adapters("p").unwrap();
    let out = values(model.forward(fixture_inputs(&device)).last_hidden_state);
    let d = max_abs_diff(
        &out,
        &read_tensor(&dir.join("expected.safetensors"), "last_hidden_state").1,
    );
    println!("peft_dora_qv: max |Δ| {d:.2e}");
    assert!(d <= TOLERANCE, "{d}");

    let (_scratch, root) = export_root("BURN_ADAPTERS_EXPORT_PEFT");
    let mut bert = base_model(&device);
    bert.load_adapter(family_dir::<BertModel>().join("dora"))
        .unwrap();
    bert.set_active_adapters("dora").unwrap();
    let hidden = values(bert.forward(fixture_inputs(&device)).last_hidden_state);
    let exported = root.join("dora");
    bert.save_peft_adapter(&exported, "dora").unwrap();
    let mut again = base_model(&device);
    again.load_peft_adapter(&exported, "again").unwrap();
    again.set_active_adapters("again").unwrap();
    assert_eq!(
        values(again.forward(fixture_inputs(&device)).last_hidden_state),
        hidden
    );
    write_f32(
        &exported.join("expected.safetensors"),
        "last_hidden_state",
        &hidden,
        &[2, 7, 32],
    );
}

/// DoRA's derivatives for `L = Σ c ⊙ y`: with the norm `n = ‖W + s·A B‖` a constant (the
/// paper's section 4.3, PEFT's `detach`) and `f = m / n`, `y = b + f ⊙ (x W + s·x A B)`, so
/// `∂L/∂m = Σ c ⊙ (x W + s·x A B) / n`, `∂L/∂B = s·(x A)ᵀ (c ⊙ f)` and
/// `∂L/∂A = s·xᵀ (c ⊙ f) Bᵀ`. A norm left in the graph adds terms to the last two.
#[test]
fn dora_gradients_hold_the_norm_constant() {
    use burn::module::Param;
    use burn::nn::LinearConfig;
    use burn::tensor::{Distribution, Tensor};
    use burn_adapters::config::LoRAInit;
    use burn_adapters::methods::LoRA;

    let device = Device::flex().autodiff();
    device.seed(11);
    let (d_in, d_out, r, s) = (4, 3, 2, 3.0);
    let config = LoRAConfig {
        r,
        alpha: s * r as f64,
        use_dora: true,
        init_weights: LoRAInit::Bert,
        init_weights_seed: Some(7),
        ..LoRAConfig::lora()
    };
    let linear = LinearConfig::new(d_in, d_out).init(&device);
    let mut lora = LoRA::new(&config, d_in, d_out, &device)
        .unwrap()
        .with_magnitude(linear.weight.val());
    // a magnitude away from the norm, as after training
    let m = Tensor::<2>::random([1, d_out], Distribution::Uniform(0.5, 2.0), &device);
    lora.magnitude = Some(Param::from_tensor(m));
    let x = Tensor::<3>::random([2, 5, d_in], Distribution::Normal(0.0, 1.0), &device);
    let c = Tensor::<3>::random([2, 5, d_out], Distribution::Normal(0.0, 1.0), &device);
    let y = lora.combine(linear.forward(x.clone()), lora.delta(None, &x), &linear);
    let grads = (y * c.clone()).sum().backward();
    let grad = |p: &Option<Param<Tensor<2>>>| values(p.as_ref().unwrap().grad(&grads).unwrap());

    // the closed forms, on detached values
    let (w, a, b) = (
        linear.weight.val().detach(),
        lora.lora_a.as_ref().unwrap().val().detach(),
        lora.lora_b.as_ref().unwrap().val().detach(),
    );
    let m = lora.magnitude.as_ref().unwrap().val().detach();
    let n = (w.clone() + a.clone().matmul(b.clone()).mul_scalar(s))
        .powi_scalar(2)
        .sum_dim(0)
        .sqrt();
    let f = m / n.clone();
    let x = x.detach().reshape([10, d_in]);
    let c = c.detach().reshape([10, d_out]);
    let xa = x.clone().matmul(a.clone());
    let adapted = x.clone().matmul(w) + xa.clone().matmul(b.clone()).mul_scalar(s);
    let cf = c.clone() * f;
    let want_m = (c * adapted / n).sum_dim(0);
    let want_b = xa.transpose().matmul(cf.clone()).mul_scalar(s);
    let want_a = x.transpose().matmul(cf.matmul(b.transpose())).mul_scalar(s);
    for (label, got, want) in [
        ("m", grad(&lora.magnitude), values(want_m)),
        ("B", grad(&lora.lora_b), values(want_b)),
        ("A", grad(&lora.lora_a), values(want_a)),
    ] {
        let want: Vec<f64> = want.iter().map(|v| *v as f64).collect();
        let d = max_abs_diff(&got, &want);
        assert!(d <= 1e-5, "∂L/∂{label}: max |Δ| {d}");
    }
}
