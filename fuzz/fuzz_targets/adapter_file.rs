//! `load_adapter` on arbitrary `adapter.safetensors` bytes beside a fixed, valid config, into a
//! tiny fixed BERT: never panics, and a failed load leaves the model without the adapter.
#![no_main]

use std::sync::OnceLock;

use burn_adapters::burn::tensor::Device;
use burn_adapters::models::bert::{BertConfig, BertModel};
use burn_adapters::prelude::*;
use libfuzzer_sys::fuzz_target;

/// The configs the weights are read against (chosen by the first input byte).
const CONFIGS: [&str; 8] = [
    include_str!("../../tests/fixtures/bn/seq_bn/adapter_config.json"),
    include_str!("../../tests/fixtures/lora/union_seq_bn_lora/adapter_config.json"),
    include_str!("../../tests/fixtures/bn/seq_bn_ln_before/adapter_config.json"),
    include_str!("../../tests/fixtures/prefix/bert/prefix_gated/adapter_config.json"),
    include_str!("../../tests/fixtures/invertible/bert/glow/adapter_config.json"),
    include_str!("../../tests/fixtures/vera/bert/dvora/adapter_config.json"),
    include_str!("../../tests/fixtures/compacter/bert/compacter_pp_full/adapter_config.json"),
    include_str!("../../tests/fixtures/compacter/bert/compacter_shared_weights/adapter_config.json"),
];

fn model() -> &'static BertModel {
    static MODEL: OnceLock<BertModel> = OnceLock::new();
    MODEL.get_or_init(|| BertConfig::tiny().init(&Device::flex()).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((choice, weights)) = data.split_first() else {
        return;
    };
    // One directory per fuzzing process, in memory where available.
    let root =
        std::path::Path::new("/dev/shm").join(format!("burn-adapters-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("adapter_config.json"),
        CONFIGS[*choice as usize % CONFIGS.len()],
    )
    .unwrap();
    std::fs::write(root.join("adapter.safetensors"), weights).unwrap();
    let mut model = model().clone();
    match model.load_adapter(&root) {
        Ok(name) => assert!(model.has_adapter(&name)),
        Err(_) => assert!(model.adapter_names().is_empty()),
    }
});
