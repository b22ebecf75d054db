//! Prediction heads on decoders: AdapterHub's classification and causal-LM heads from
//! `AutoAdapterModel` (LlamaAdapterModel, GPT2AdapterModel) load with their adapters and give
//! AdapterHub's logits (`tools/gen_fixtures_decoder.py`), and save back.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor};
use burn_adapters::heads::HeadConfig;
use burn_adapters::models::decoder::DecoderInput;
use burn_adapters::models::gpt2::Gpt2Model;
use burn_adapters::models::llama::LlamaModel;
use burn_adapters::prelude::*;
use common::*;

const TOLERANCE: f64 = 1e-5;

fn heads_dir(family: &str) -> PathBuf {
    fixtures().join("decoder").join(family).join("heads")
}

fn right_padded(device: &Device) -> DecoderInput {
    let path = fixtures().join("decoder/inputs_right.safetensors");
    DecoderInput::new(
        int_tensor(&path, "input_ids", device),
        int_tensor(&path, "attention_mask", device),
    )
}

fn expected(dir: &Path) -> Vec<f64> {
    read_tensor(&dir.join("expected.safetensors"), "logits").1
}

/// Loads both head cases of `family` into `model`, compares their logits with AdapterHub's,
/// saves them and reloads them into `fresh` with the same logits.
fn check_heads<M: AdapterModel + Clone>(
    model: &mut M,
    family: &str,
    classify: impl Fn(&M, &str, DecoderInput) -> Result<Tensor<2>>,
    tag: impl Fn(&M, &str, DecoderInput) -> Result<Tensor<3>>,
    device: &Device,
) {
    let fresh = model.clone();
    let scratch = tempfile::tempdir().unwrap();
    for (case, sequence) in [("cls_seq_bn", true), ("lm_lora", false)] {
        let dir = heads_dir(family).join(case);
        let name = model.load_adapter(&dir).unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
        let logits = |model: &M| match sequence {
            true => values(classify(model, &name, right_padded(device)).unwrap()),
            false => values(tag(model, &name, right_padded(device)).unwrap()),
        };
        let got = logits(model);
        let delta = max_abs_diff(&got, &expected(&dir));
        println!("{family}/{case:<11} head logits max |Δ| = {delta:.2e}");
        assert!(delta <= TOLERANCE, "{family}/{case}: max |Δ| = {delta:e}");

        let out = scratch.path().join(case);
        model.save_adapter(&out, &name).unwrap();
        for file in ["head_config.json", "model_head.safetensors"] {
            assert!(out.join(file).is_file(), "{family}/{case}: {file}");
        }
        let mut reloaded = fresh.clone();
        reloaded.load_adapter(&out).unwrap();
        reloaded.set_active_adapters(name.as_str()).unwrap();
        assert_eq!(got, logits(&reloaded), "{family}/{case}: reloaded");
    }
}

#[test]
fn adapterhub_heads_on_decoders_give_adapterhubs_logits_and_save_back() {
    let device = device();
    let base = fixtures().join("decoder/llama/base");
    let mut llama = LlamaModel::from_pretrained(base, &device).unwrap();
    check_heads(
        &mut llama,
        "llama",
        LlamaModel::classify,
        LlamaModel::tag,
        &device,
    );
    let base = fixtures().join("decoder/gpt2/base");
    let mut gpt2 = Gpt2Model::from_pretrained(base, &device).unwrap();
    check_heads(
        &mut gpt2,
        "gpt2",
        Gpt2Model::classify,
        Gpt2Model::tag,
        &device,
    );
}

/// A left-padded row (with its positions counted from its first token, as generation does)
/// classifies from its last token: the same logits as the right-padded batch. AdapterHub would
/// read the padded row's fifth of seven tokens.
#[test]
fn classification_reads_the_last_real_token_of_left_and_right_padded_rows() {
    let device = device();
    let mut model =
        Gpt2Model::from_pretrained(fixtures().join("decoder/gpt2/base"), &device).unwrap();
    let dir = heads_dir("gpt2").join("cls_seq_bn");
    let name = model.load_adapter(&dir).unwrap();
    model.set_active_adapters(name.as_str()).unwrap();
    let path = fixtures().join("decoder/inputs.safetensors");
    let mut left = DecoderInput::new(
        int_tensor(&path, "input_ids", &device),
        int_tensor(&path, "attention_mask", &device),
    );
    // Row 1 is padded by 2 on the left.
    let positions = [[0, 1, 2, 3, 4, 5, 6], [0, 0, 0, 1, 2, 3, 4]];
    left.position_ids = Some(Tensor::<2, Int>::from_ints(positions, &device));
    let left = values(model.classify(&name, left).unwrap());
    let delta = max_abs_diff(&left, &expected(&dir));
    assert!(delta <= TOLERANCE, "left padding: max |Δ| = {delta:e}");
}

#[test]
fn heads_added_on_decoders_run_and_refuse_what_does_not_fit() {
    let device = device();
    let mut model =
        Gpt2Model::from_pretrained(fixtures().join("decoder/gpt2/base"), &device).unwrap();
    model.add_head("lm", HeadConfig::causal_lm(61, 32)).unwrap();
    model
        .add_head("cls", HeadConfig::classification(2))
        .unwrap();
    let ids = Tensor::<2, Int>::from_ints([[5, 6, 7]], &device);
    let logits = model.tag("lm", DecoderInput::ids(ids.clone())).unwrap();
    assert_eq!(logits.dims(), [1, 3, 61]);
    assert_eq!(
        model
            .classify("cls", DecoderInput::ids(ids.clone()))
            .unwrap()
            .dims(),
        [1, 2]
    );
    assert!(matches!(
        model.classify("lm", DecoderInput::ids(ids.clone())),
        Err(Error::InvalidSetup(_))
    ));
    assert!(matches!(
        model.tag("nope", DecoderInput::ids(ids)),
        Err(Error::UnknownHead(_))
    ));
    match model.add_head("wide", HeadConfig::causal_lm(61, 64)) {
        Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "embedding_size"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}
