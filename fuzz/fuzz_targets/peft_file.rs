//! `load_peft_adapter` on an arbitrary PEFT `adapter_config.json` or `adapter_model.safetensors`
//! beside the other file of PEFT's DoRA, VeRA or IA3 fixture (the first input byte chooses which file
//! and which fixture), into a tiny fixed BERT: never panics, and a failed load leaves no adapter
//! behind.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use burn_adapters::burn::tensor::Device;
use burn_adapters::models::bert::{BertConfig, BertModel};
use burn_adapters::prelude::*;
use libfuzzer_sys::fuzz_target;

/// (config, weights) of PEFT's DoRA, VeRA and IA3 fixtures.
const FILES: [(&[u8], &[u8]); 3] = [
    (
        include_bytes!("../../tests/fixtures/peft/peft_dora_qv/adapter_config.json"),
        include_bytes!("../../tests/fixtures/peft/peft_dora_qv/adapter_model.safetensors"),
    ),
    (
        include_bytes!("../../tests/fixtures/peft_vera/bert_vera/adapter_config.json"),
        include_bytes!("../../tests/fixtures/peft_vera/bert_vera/adapter_model.safetensors"),
    ),
    (
        include_bytes!("../../tests/fixtures/peft_ia3/bert_default/adapter_config.json"),
        include_bytes!("../../tests/fixtures/peft_ia3/bert_default/adapter_model.safetensors"),
    ),
];

fn model() -> &'static BertModel {
    static MODEL: OnceLock<BertModel> = OnceLock::new();
    MODEL.get_or_init(|| BertConfig::tiny().init(&Device::flex()).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((choice, bytes)) = data.split_first() else {
        return;
    };
    let (config, weights) = FILES[usize::from(choice / 2 % 3)];
    let (config, weights) = match choice % 2 {
        0 => (bytes, weights),
        _ => (config, bytes),
    };
    let root =
        Path::new("/dev/shm").join(format!("burn-adapters-fuzz-peft-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("adapter_config.json"), config).unwrap();
    std::fs::write(root.join("adapter_model.safetensors"), weights).unwrap();
    let mut model = model().clone();
    match model.load_peft_adapter(&root, "p") {
        Ok(()) => assert!(model.has_adapter("p")),
        Err(_) => assert!(model.adapter_names().is_empty()),
    }
});
