//! Invertible adapters (NICE and GLOW couplings on the embeddings, inverted before the output
//! embeddings) against AdapterHub (`tools/gen_fixtures_invertible.py`) on BERT, Llama and GPT-2:
//! outputs, parameter counts, the setup's first adapter, cached generation, files both ways,
//! training, the inverse, and bad configs.

mod common;

use std::path::PathBuf;

use burn::tensor::{Device, Distribution, Tensor};
use burn_adapters::heads::{HeadConfig, LmHeadConfig};
use burn_adapters::models::bert::BertModel;
use burn_adapters::models::gpt2::Gpt2Model;
use burn_adapters::models::llama::LlamaModel;
use burn_adapters::prelude::*;
use common::decoder::*;
use common::families::{
    Family, cases_match_reference, deviation, export_root, generates_as_reference, listed_cases,
    moved, rust_saved_cases_reload,
};
use common::snapshot::snapshot;
use common::*;

const TOLERANCE: f64 = 1e-5;

const CASES: usize = 5;

fn family_dir<F: Family>() -> PathBuf {
    fixtures().join("invertible").join(F::NAME)
}

#[test]
fn bert_invertible_adapters_match_adapterhub() {
    cases_match_reference::<BertModel>("invertible", CASES, TOLERANCE, &device());
}

#[test]
fn llama_invertible_adapters_match_adapterhub() {
    cases_match_reference::<LlamaModel>("invertible", CASES, TOLERANCE, &device());
}

#[test]
fn gpt2_invertible_adapters_match_adapterhub() {
    cases_match_reference::<Gpt2Model>("invertible", CASES, TOLERANCE, &device());
}

/// Only the setup's first adapter's invertible adapter runs: `Stack(plain, inv)` runs none.
fn first_adapter_inverts<F: Family>() {
    let device = device();
    let dir = family_dir::<F>().join("stack");
    let mut model = F::base(&device);
    model.load_adapter(dir.join("inv")).unwrap();
    model.load_adapter(dir.join("plain")).unwrap();
    for setup in ["Stack(inv, plain)", "Stack(plain, inv)"] {
        model
            .set_active_adapters(setup.replace('(', "[").replace(')', "]").as_str())
            .unwrap();
        let key = format!("{setup}/{}", F::OUTPUT);
        let expected = dir.join("expected.safetensors");
        let d = deviation::<F>(model.output(&device), &expected, &key, &device);
        println!("{} {setup}: max |Δ| {d:.2e}", F::NAME);
        assert!(d <= TOLERANCE, "{} {setup}: max |Δ| {d}", F::NAME);
    }
}

#[test]
fn the_setups_first_adapter_inverts_as_in_adapterhub() {
    first_adapter_inverts::<BertModel>();
    first_adapter_inverts::<LlamaModel>();
    first_adapter_inverts::<Gpt2Model>();
}

#[test]
fn llama_generation_with_invertible_adapters_matches_transformers() {
    for (_, _, dir) in listed_cases::<LlamaModel>("invertible", CASES) {
        generates_as_reference::<LlamaModel>(&dir, &device());
    }
}

#[test]
fn gpt2_generation_with_invertible_adapters_matches_transformers() {
    for (_, _, dir) in listed_cases::<Gpt2Model>("invertible", CASES) {
        generates_as_reference::<Gpt2Model>(&dir, &device());
    }
}

/// Rust-saved files reload the same; under `BURN_ADAPTERS_EXPORT_INVERTIBLE` they go to
/// `<dir>/bert/<case>` and `<dir>/decoder/<family>/<case>` for the Python checkers.
#[test]
fn rust_saved_invertible_adapters_reload_exactly() {
    let (_scratch, root) = export_root("BURN_ADAPTERS_EXPORT_INVERTIBLE");
    rust_saved_cases_reload::<BertModel>("invertible", CASES, &root, &device());
    rust_saved_cases_reload::<LlamaModel>("invertible", CASES, &root, &device());
    rust_saved_cases_reload::<Gpt2Model>("invertible", CASES, &root, &device());
}

/// The inverse undoes the coupling (NICE exactly up to rounding, GLOW through its scales), on
/// the fixtures' perturbed adapters.
#[test]
fn the_inverse_undoes_the_coupling() {
    let device = device();
    for name in ["seq_bn_inv", "glow", "nice_gelu_rf4"] {
        let mut model = base_model(&device);
        model
            .load_adapter(family_dir::<BertModel>().join(name))
            .unwrap();
        let site = model.embedding_site().unwrap();
        let invertible = site.invertibles().get(name).unwrap();
        let x = Tensor::<3>::random([2, 7, 32], Distribution::Normal(0.0, 1.0), &device);
        let y = invertible.forward(x.clone());
        assert!(max_abs_diff_tensors(y.clone(), x.clone()) > 0.1, "{name}");
        let d = max_abs_diff_tensors(invertible.inverse(y), x);
        assert!(d <= 1e-5, "{name}: inverse(forward(x)) - x: {d}");
    }
}

/// AdapterHub's language-model heads (on `AutoAdapterModel`) invert the adapter before their
/// output layer: the masked-LM head's logits on BERT, the causal-LM head's on Llama and GPT-2.
#[test]
fn language_model_heads_invert_as_adapterhubs() {
    let device = device();
    let dir = family_dir::<BertModel>().join("lm_head");
    let mut bert = base_model(&device);
    bert.load_adapter(&dir).unwrap();
    bert.set_active_adapters("inv_lm").unwrap();
    let head = &bert.heads.get("inv_lm").unwrap().config;
    assert!(
        matches!(head, HeadConfig::MaskedLm(lm) if !lm.shift_labels),
        "{head:?}"
    );
    let logits = bert.tag("inv_lm", fixture_inputs(&device)).unwrap();
    let expected = read_tensor(&dir.join("expected.safetensors"), "logits").1;
    let d = max_abs_diff(&values(logits), &expected);
    println!("bert lm_head: max |Δ| {d:.2e}");
    assert!(d <= TOLERANCE, "bert lm_head: max |Δ| {d}");
    let check = |name: &str, logits: Tensor<3>| {
        let dir = fixtures().join("invertible").join(name).join("lm_head");
        // `deviation` compares decoder logits at the real tokens (any decoder family does)
        let d =
            deviation::<LlamaModel>(logits, &dir.join("expected.safetensors"), "logits", &device);
        println!("{name} lm_head: max |Δ| {d:.2e}");
        assert!(d <= TOLERANCE, "{name} lm_head: max |Δ| {d}");
    };
    let mut llama = LlamaModel::base(&device);
    llama
        .load_adapter(family_dir::<LlamaModel>().join("lm_head"))
        .unwrap();
    llama.set_active_adapters("inv_lm").unwrap();
    check(
        "llama",
        llama.tag("inv_lm", decoder_inputs(&device)).unwrap(),
    );
    let mut gpt2 = Gpt2Model::base(&device);
    gpt2.load_adapter(family_dir::<Gpt2Model>().join("lm_head"))
        .unwrap();
    gpt2.set_active_adapters("inv_lm").unwrap();
    check("gpt2", gpt2.tag("inv_lm", decoder_inputs(&device)).unwrap());
}

/// A causal-LM head and the decoder's own output embeddings read the hidden states through the
/// inverse; the hidden states themselves come from the transformed embeddings.
#[test]
fn language_model_heads_invert_before_the_output_embeddings() {
    let device = device();
    let dir = family_dir::<LlamaModel>().join("glow");
    let mut model = LlamaModel::base(&device);
    model.load_adapter(&dir).unwrap();
    let head = HeadConfig::CausalLm(LmHeadConfig {
        vocab_size: 64,
        embedding_size: 32,
        layers: 1,
        activation_function: None,
        layer_norm: false,
        bias: true,
        shift_labels: true,
        label2id: None,
        dropout_prob: None,
    });
    model.add_head("glow", head).unwrap();
    model.set_active_adapters("glow").unwrap();
    let input = decoder_inputs(&device);
    let hidden = model.last_hidden_state(input.clone());
    let inverted = model
        .embedding_site()
        .unwrap()
        .invertible()
        .unwrap()
        .inverse(hidden);
    let output_layer = &model.heads.get("glow").unwrap().layers[0];
    let expected = output_layer.forward(inverted.clone());
    let d = max_abs_diff_tensors(model.tag("glow", input.clone()).unwrap(), expected);
    assert!(d <= 1e-6, "head: {d}");
    let lm_head = match &model.lm_head {
        Some(lm_head) => lm_head.forward(inverted),
        None => inverted.matmul(model.embed_tokens.weight.val().transpose().unsqueeze()),
    };
    let d = max_abs_diff_tensors(model.forward(input), lm_head);
    assert!(d <= 1e-5, "lm_head: {d}");
}

/// Training moves the invertible adapter and the bottlenecks of the adapter, nothing else.
#[test]
fn training_moves_only_the_adapter() {
    let device = Device::flex().autodiff();
    let mut model =
        LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), &device).unwrap();
    let config = AdapterConfig::load("seq_bn_inv[inv_adapter=\"glow\"]").unwrap();
    model.add_adapter("inv", config).unwrap();
    model.train_adapter("inv").unwrap();
    let before = snapshot(&model);
    let (model, losses) = train_steps(model, |m, input| m.forward(input), &device);
    assert!(losses.last() < losses.first(), "{losses:?}");
    let moved = moved(&before, &model);
    for path in &moved {
        assert!(path.contains(".inv."), "{path} moved");
    }
    for net in ["s1.down", "s1.up", "s2.down", "s2.up"] {
        assert!(moved.iter().any(|p| p.contains(net)), "{net}: {moved:?}");
    }
}

#[test]
fn bad_invertible_configs_are_errors() {
    for (spec, field) in [
        (
            "seq_bn[inv_adapter=\"nice\"]",
            "inv_adapter_reduction_factor",
        ),
        (
            "seq_bn_inv[inv_adapter_reduction_factor=0]",
            "inv_adapter_reduction_factor",
        ),
        (
            "seq_bn_inv[inv_adapter_reduction_factor=-2]",
            "inv_adapter_reduction_factor",
        ),
    ] {
        let err = AdapterConfig::load(spec).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { field: f, .. } if f == field),
            "{spec}: {err}"
        );
    }
    let device = device();
    let mut model = base_model(&device);
    for factor in ["17", "1e-9"] {
        let spec = format!("seq_bn_inv[inv_adapter_reduction_factor={factor}]");
        let err = model
            .add_adapter("inv", AdapterConfig::load(&spec).unwrap())
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { field, .. } if field == "inv_adapter_reduction_factor"),
            "{spec}: {err}"
        );
        assert!(!model.has_adapter("inv"));
    }
}

/// On burn's `TransformerEncoder` (no AdapterHub counterpart), the invertible adapter
/// transforms the input: with no bottleneck placed, the output is the base encoder's on the
/// coupled input.
#[test]
fn an_encoder_runs_on_the_coupled_input() {
    use burn::nn::transformer::TransformerEncoderConfig;
    use burn_adapters::models::encoder::{AdapterTransformerEncoder, TransformerEncoderInput};
    let device = device();
    let encoder = TransformerEncoderConfig::new(16, 32, 4, 1)
        .with_dropout(0.0)
        .init(&device);
    let mut model = AdapterTransformerEncoder::from_encoder(encoder);
    let config = AdapterConfig::load("seq_bn_inv[leave_out=[0]]").unwrap();
    model.add_adapter("inv", config).unwrap();
    let x = Tensor::<3>::random([2, 5, 16], Distribution::Normal(0.0, 1.0), &device);
    let site = model.embedding_site().unwrap();
    let coupled = site.invertibles().get("inv").unwrap().forward(x.clone());
    let expected = model.forward(TransformerEncoderInput::new(coupled));
    model.set_active_adapters("inv").unwrap();
    let out = model.forward(TransformerEncoderInput::new(x));
    assert_eq!(values(out), values(expected));
}
