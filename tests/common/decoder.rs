//! Helpers of the decoder suites (`tests/decoder.rs`, `tests/gpt2.rs`, `tests/backends.rs`).

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use burn_adapters::models::decoder::DecoderInput;
use burn_adapters::train::{IGNORE_INDEX, Trainer, TrainingConfig, causal_lm_loss};

use super::snapshot::snapshot;
use super::{fixtures, int_tensor, read_tensor, values};

/// The fixture batch of `tools/gen_fixtures_decoder.py`: two rows, the second left-padded.
pub fn decoder_inputs(device: &Device) -> DecoderInput {
    let path = fixtures().join("decoder/inputs.safetensors");
    DecoderInput::new(
        int_tensor(&path, "input_ids", device),
        int_tensor(&path, "attention_mask", device),
    )
}

/// The input ids as labels, [`IGNORE_INDEX`] at padding.
pub fn lm_labels(input: &DecoderInput) -> Tensor<2, Int> {
    let padding = input.attention_mask.clone().unwrap().equal_elem(0);
    input.input_ids.clone().mask_fill(padding, IGNORE_INDEX)
}

/// transformers' greedy tokens per row (`generated` in `dir`'s `expected.safetensors`), cut
/// after the stop token 2 (the rest is padding).
pub fn reference_tokens(dir: &Path) -> Vec<Vec<usize>> {
    let (shape, values) = read_tensor(&dir.join("expected.safetensors"), "generated");
    values
        .chunks(shape[1])
        .map(|row| {
            let row: Vec<usize> = row.iter().map(|v| *v as usize).collect();
            match row.iter().position(|t| *t == 2) {
                Some(stop) => row[..=stop].to_vec(),
                None => row,
            }
        })
        .collect()
}

/// The logits at real tokens: a padded query's output depends on how many keys it was run with
/// and means nothing. `logits` may hold the batch several times over (a `Parallel` setup).
pub fn at_tokens(logits: Tensor<3>, input: &DecoderInput) -> Tensor<3> {
    let [rows, seq, vocab] = logits.dims();
    let mask = input.attention_mask.clone().unwrap().float();
    let copies = rows / mask.dims()[0];
    let mask = mask.repeat_dim(0, copies).reshape([rows, seq, 1]);
    logits * mask.expand([rows, seq, vocab])
}

/// Every parameter of `model` outside adapter `name`.
pub fn frozen<M: Module>(model: &M, name: &str) -> BTreeMap<String, Vec<f32>> {
    let marker = format!(".{name}.");
    snapshot(model)
        .into_iter()
        .filter(|(path, _)| !path.contains(&marker))
        .collect()
}

/// The causal-LM losses of 20 AdamW steps (learning rate 1e-2) on the fixture batch.
pub fn train_steps<M: Module>(
    mut model: M,
    forward: impl Fn(&M, DecoderInput) -> Tensor<3>,
    device: &Device,
) -> (M, Vec<f32>) {
    let input = decoder_inputs(device);
    let labels = lm_labels(&input);
    let mut trainer = Trainer::new(&TrainingConfig::new().with_learning_rate(1e-2), 20);
    let mut losses = Vec::new();
    for _ in 0..20 {
        let loss = causal_lm_loss(forward(&model, input.clone()), labels.clone()).unwrap();
        losses.push(values(loss.clone())[0]);
        model = trainer.step(model, loss);
    }
    (model, losses)
}

/// Loads `family`'s fusion fixture (adapters `fa`, `fb` and their AdapterFusion) into `model`,
/// activates `Fuse[fa, fb]` and returns max |Δ| of the logits against AdapterHub's.
pub fn fusion_delta<M: burn_adapters::AdapterModel>(
    mut model: M,
    family: &str,
    forward: impl Fn(&M, DecoderInput) -> Tensor<3>,
    device: &Device,
) -> f64 {
    let dir = fixtures().join("decoder").join(family).join("fusion");
    for name in ["fa", "fb"] {
        model.load_adapter(dir.join(name)).unwrap();
    }
    model.load_adapter_fusion(dir.join("fusion")).unwrap();
    model.set_active_adapters("Fuse[fa, fb]").unwrap();
    let logits = values(forward(&model, decoder_inputs(device)));
    let expected = read_tensor(&dir.join("expected.safetensors"), "logits").1;
    super::max_abs_diff(&logits, &expected)
}

/// Checks that `PerRow[seq_bn, lora_all]` generates row 0 as `seq_bn` alone and row 1 as
/// `lora_all` alone (12 greedy tokens of the fixture batch), with both adapters loaded from
/// `cases`.
pub fn check_per_row_generation<M>(mut model: M, cases: &Path, device: &Device)
where
    M: burn_adapters::AdapterModel + burn_adapters::generation::CausalLm,
{
    use burn_adapters::generation::{GenerationConfig, generate};
    for case in ["seq_bn", "lora_all"] {
        model.load_adapter(cases.join(case)).unwrap();
    }
    let config = GenerationConfig::new(12);
    let input = decoder_inputs(device);
    let mut run = |setup: &str| {
        model.set_active_adapters(setup).unwrap();
        let (ids, mask) = (
            input.input_ids.clone(),
            input.attention_mask.clone().unwrap(),
        );
        generate(&model, ids, mask, &config, |_, _| {}).unwrap()
    };
    let bottleneck = run("seq_bn");
    let lora = run("lora_all");
    assert_ne!(bottleneck[1], lora[1], "the adapters generate differently");
    let mixed = run("PerRow[seq_bn, lora_all]");
    assert_eq!(mixed, vec![bottleneck[0].clone(), lora[1].clone()]);
}
