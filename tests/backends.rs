//! Backend conformance: the same checks on whichever device `BURN_ADAPTERS_TEST_DEVICE` names
//! (`flex` by default; `wgpu`, `tch`, `cuda` when the crate feature is on), compared with the
//! results on a second device (flex, or without the `flex` feature another compiled-in backend)
//! and with the reference fixtures.
//!
//! ```text
//! BURN_ADAPTERS_TEST_DEVICE=wgpu cargo test --features wgpu --test backends
//! ```
//!
//! CI builds it without `flex` (`--no-default-features --features wgpu,tch`), which also checks
//! that the library builds for a user without the default feature.

mod common;

use std::path::PathBuf;

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use burn_adapters::backend::{available_backends, device_by_name};
use burn_adapters::generation::{GenerationConfig, generate};
use burn_adapters::models::bert::BertModel;
use burn_adapters::models::gpt2::Gpt2Model;
use burn_adapters::models::llama::{DecoderInput, LlamaModel};
use burn_adapters::prelude::*;
use common::decoder::{decoder_inputs, reference_tokens};
use common::snapshot::snapshot;
use common::*;

fn device_name() -> String {
    std::env::var("BURN_ADAPTERS_TEST_DEVICE").unwrap_or_else(|_| "flex".into())
}

fn test_device() -> Device {
    device_by_name(&device_name()).expect("the backend's crate feature is enabled")
}

/// The device results are compared with: flex when it is compiled in, else another compiled-in
/// backend than the one under test; and the tolerance between the two.
fn reference_device() -> (Device, f64) {
    let name = available_backends()
        .into_iter()
        .find(|b| *b == "flex" || *b != device_name())
        .expect("a second backend to compare with");
    (
        device_by_name(name).unwrap(),
        tolerance().max(tolerance_of(name)),
    )
}

/// GPU-style backends reorder float sums more freely than CPU ones.
fn tolerance_of(device: &str) -> f64 {
    match device {
        "wgpu" | "cuda" => 1e-4,
        _ => 1e-5,
    }
}

/// The tolerance of the device under test against the reference.
fn tolerance() -> f64 {
    tolerance_of(&device_name())
}

fn load(device: &Device) -> BertModel {
    BertModel::from_pretrained(fixtures().join("base"), device).unwrap()
}

/// Adapters from every family, as saved by the reference.
fn cases() -> Vec<PathBuf> {
    [
        "bn/seq_bn",
        "bn/double_seq_bn",
        "bn/par_bn",
        "lora/lora_qkv_ffn",
        "lora/ia3",
        "lora/union_seq_bn_lora",
        "prefix/bert/prefix_gated",
        "prefix/bert/prefix_lora",
        "invertible/bert/glow",
        "mtl_lora/bert/mtl_linear",
        "variants/bert/dora_seq_bn",
        "variants/bert/unipelt",
    ]
    .iter()
    .map(|c| fixtures().join(c))
    .collect()
}

fn hidden(model: &BertModel, device: &Device) -> Vec<f32> {
    values(model.forward(fixture_inputs(device)).last_hidden_state)
}

#[test]
fn adapters_compute_the_same_on_this_device_as_on_another_and_in_the_reference() {
    let (device, (other, between)) = (test_device(), reference_device());
    let (base, other_base) = (load(&device), load(&other));
    for case in cases() {
        let label = case.strip_prefix(fixtures()).unwrap().display().to_string();
        let mut model = base.clone();
        let name = model.load_adapter(&case).unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
        let mut reference = other_base.clone();
        reference.load_adapter(&case).unwrap();
        reference.set_active_adapters(name.as_str()).unwrap();
        let got = hidden(&model, &device);
        let vs_other = max_abs_diff(&got, &as_f64(&hidden(&reference, &other)));
        let (_, want) = read_tensor(&case.join("expected.safetensors"), "last_hidden_state");
        let vs_python = max_abs_diff(&got, &want);
        println!(
            "{} {label:<28} vs {other:?} {vs_other:.2e}, vs AdapterHub {vs_python:.2e}",
            device_name()
        );
        assert!(vs_other <= between && vs_python <= tolerance(), "{label}");
    }
}

/// Logits on the fixture inputs and greedy tokens against transformers' (`tools/gen_fixtures_decoder.py`),
/// with `case`'s adapter active (the base model for `""`).
fn check_decoder<M: AdapterModel + burn_adapters::generation::CausalLm>(
    mut model: M,
    forward: impl Fn(&M, DecoderInput) -> Tensor<3>,
    family: &str,
    case: &str,
    device: &Device,
) {
    let dir = fixtures().join("decoder").join(family);
    let dir = match case {
        "" => dir,
        // prefix tuning's fixtures (tools/gen_fixtures_prefix.py)
        case if case.starts_with("prefix") => fixtures().join("prefix").join(family).join(case),
        // other methods' fixtures: `<group>/<case>` (tools/gen_fixtures_<group>.py)
        case if case.contains('/') => {
            let (group, case) = case.split_once('/').unwrap();
            fixtures().join(group).join(family).join(case)
        }
        case => dir.join("cases").join(case),
    };
    if !case.is_empty() {
        let name = model.load_adapter(&dir).unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
    }
    let expected = dir.join("expected.safetensors");
    let logits = values(forward(&model, decoder_inputs(device)));
    let delta = max_abs_diff(&logits, &read_tensor(&expected, "logits").1);
    println!(
        "{} {family}/{case:<10} logits vs transformers {delta:.2e}",
        device_name()
    );
    assert!(delta <= tolerance(), "{family}/{case}: max |Δ| = {delta:e}");

    let input = decoder_inputs(device);
    let config = GenerationConfig::new(20)
        .with_stop_tokens(vec![2])
        .with_pad_token_id(0);
    let mask = input.attention_mask.unwrap();
    let tokens = generate(&model, input.input_ids, mask, &config, |_, _| {}).unwrap();
    assert_eq!(
        tokens,
        reference_tokens(&dir),
        "{family}/{case}: greedy tokens"
    );
}

#[test]
fn decoders_match_transformers_on_this_device_with_the_cache() {
    let device = test_device();
    for case in ["", "seq_bn", "lora_all"] {
        let model = LlamaModel::from_pretrained(fixtures().join("decoder/qwen2/base"), &device);
        check_decoder(model.unwrap(), LlamaModel::forward, "qwen2", case, &device);
    }
    for case in [
        "prefix_mlp",
        "invertible/glow",
        "mtl_lora/mtl_ffn_sharp",
        "variants/dora",
    ] {
        let model = LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), &device);
        check_decoder(model.unwrap(), LlamaModel::forward, "llama", case, &device);
    }
    let cases = [
        "",
        "par_bn",
        "lora_qv",
        "ia3",
        "prefix_flat",
        "invertible/seq_bn_inv",
        "variants/mam",
    ];
    for case in cases {
        let model = Gpt2Model::from_pretrained(fixtures().join("decoder/gpt2/base"), &device);
        check_decoder(model.unwrap(), Gpt2Model::forward, "gpt2", case, &device);
    }
}

#[test]
fn training_a_lora_and_a_bottleneck_leaves_the_base_untouched() {
    let device = test_device().autodiff();
    let mut model = load(&device);
    model
        .load_adapter(fixtures().join("lora/union_seq_bn_lora"))
        .unwrap();
    model.train_adapter("union_seq_bn_lora").unwrap();
    let before = snapshot(&model);
    let target = Tensor::<3>::random([2, 7, 32], Distribution::Normal(0.0, 1.0), &device);
    let mut optim = AdamConfig::new().init();
    for _ in 0..2 {
        let out = model.forward(fixture_inputs(&device)).last_hidden_state;
        let loss = (out - target.clone()).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let after = snapshot(&model);
    let mut changed = 0;
    for (path, old) in &before {
        if path.contains(".union_seq_bn_lora.") {
            changed += usize::from(old != &after[path]);
        } else {
            assert_eq!(old, &after[path], "{path} changed on {}", device_name());
        }
    }
    assert!(changed >= 8, "{changed} adapter tensors moved");
}

#[test]
fn adapters_move_between_devices_through_files() {
    let (device, (other, between)) = (test_device(), reference_device());
    let scratch = tempfile::tempdir().unwrap();
    let case = fixtures().join("lora/union_seq_bn_lora");
    // saved on this device, loaded on the other
    let mut model = load(&device);
    let name = model.load_adapter(&case).unwrap();
    model
        .save_adapter(scratch.path().join("here"), &name)
        .unwrap();
    let mut there = load(&other);
    there.load_adapter(scratch.path().join("here")).unwrap();
    there.set_active_adapters(name.as_str()).unwrap();
    model.set_active_adapters(name.as_str()).unwrap();
    let delta = max_abs_diff(&hidden(&model, &device), &as_f64(&hidden(&there, &other)));
    assert!(delta <= between, "{delta:e}");
    // saved on the other, loaded here: the saved tensors are identical
    there
        .save_adapter(scratch.path().join("other"), &name)
        .unwrap();
    let mut back = load(&device);
    back.load_adapter(scratch.path().join("other")).unwrap();
    back.save_adapter(scratch.path().join("again"), &name)
        .unwrap();
    assert_eq!(
        std::fs::read(scratch.path().join("other/adapter.safetensors")).unwrap(),
        std::fs::read(scratch.path().join("again/adapter.safetensors")).unwrap()
    );
}

#[test]
fn merge_and_reset_on_this_device() {
    let device = test_device();
    let mut model = load(&device);
    let name = model
        .load_adapter(fixtures().join("lora/lora_qkv_ffn"))
        .unwrap();
    model.set_active_adapters(name.as_str()).unwrap();
    let base = snapshot(&model);
    let unmerged = hidden(&model, &device);
    model.merge_adapter(&name).unwrap();
    let delta = max_abs_diff(&hidden(&model, &device), &as_f64(&unmerged));
    assert!(delta <= tolerance(), "merged: {delta:e}");
    model.reset_adapter();
    let restored = snapshot(&model);
    let worst = base
        .iter()
        .map(|(k, v)| max_abs_diff(v, &as_f64(&restored[k])))
        .fold(0.0, f64::max);
    assert!(worst <= 1e-6, "reset: {worst:e}");
}

/// Adapters, LoRA and IA3 with every weight in f16/bf16 (on devices that support the type) stay
/// within a few units of the format's precision of the f32 output.
#[test]
fn adapters_run_in_half_precision() {
    use burn::tensor::DType;
    use burn_adapters::backend::cast_params;
    let device = test_device();
    let base = load(&device);
    // Relative to the largest output: a few units of the format's epsilon (f16 ≈ 1e-3, bf16 ≈ 8e-3)
    // after two perturbed layers.
    for (dtype, tolerance) in [(DType::F16, 5e-3), (DType::BF16, 3e-2)] {
        if !device.supports_dtype(dtype) {
            println!("{} does not support {dtype:?}: skipped", device_name());
            continue;
        }
        for case in [
            "bn/seq_bn",
            "lora/lora_qv",
            "lora/ia3",
            "lora/union_seq_bn_lora",
        ] {
            let mut model = base.clone();
            let name = model.load_adapter(fixtures().join(case)).unwrap();
            model.set_active_adapters(name.as_str()).unwrap();
            let full = hidden(&model, &device);
            let half = cast_params(model, dtype);
            let out = half.forward(fixture_inputs(&device)).last_hidden_state;
            assert_eq!(out.dtype(), dtype, "{case}");
            let got: Vec<f32> = values(out.cast(DType::F32));
            let scale = full.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
            let delta = max_abs_diff(&got, &as_f64(&full)) / scale;
            println!(
                "{} {dtype:?} {case:<20} max |Δ| / max |y| vs f32 = {delta:.2e}",
                device_name()
            );
            assert!(delta <= tolerance, "{dtype:?} {case}: {delta:e}");
        }
    }
}

/// `methods::dropout` on this device: in training it zeroes a fraction `p` of the elements and
/// scales the rest by `1/(1-p)`, its gradient is that same mask, `Device::seed` makes it
/// reproducible, and outside training (or off an autodiff device) it is the identity.
#[test]
fn dropout_drops_a_fraction_p_and_scales_the_rest() {
    use burn::module::Module;
    use burn::nn::DropoutConfig;
    use burn_adapters::__private::dropout;
    let device = test_device().autodiff();
    let p = 0.25;
    let layer = DropoutConfig::new(p).init();
    let n = 100_000;
    let draw = |seed: u64| {
        device.seed(seed);
        let x = Tensor::<2>::ones([4, n / 4], &device).require_grad();
        let y = dropout(&layer, x.clone());
        let grads = y.clone().sum().backward();
        let grad = x.grad(&grads).expect("x is tracked");
        (values(y), values(grad))
    };
    let (y, grad) = draw(5);
    let scale = (1.0 / (1.0 - p)) as f32;
    assert!(
        y.iter().all(|&v| v == 0.0 || (v - scale).abs() <= 1e-6),
        "{}: values other than 0 and 1/(1-p)",
        device_name()
    );
    // d(x ⊙ m)/dx = m
    assert_eq!(y, grad, "{}: gradient differs from the mask", device_name());
    // binomial(n, p): within 6 standard deviations of the mean
    let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (dropped - n as f64 * p).abs() < 6.0 * sd,
        "{}: dropped {dropped} of {n}",
        device_name()
    );
    assert_eq!(y, draw(5).0, "{}: same seed, other mask", device_name());
    assert_ne!(y, draw(6).0, "{}: other seed, same mask", device_name());

    let x = Tensor::<2>::ones([4, 8], &device);
    let frozen = layer.clone().freeze();
    assert_eq!(values(dropout(&frozen, x.clone())), values(x.clone()));
    let inference = Tensor::<2>::ones([4, 8], &test_device());
    assert_eq!(
        values(dropout(&layer, inference.clone())),
        values(inference)
    );
}
