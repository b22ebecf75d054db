//! `load_adapter` on an arbitrary `pytorch_adapter.bin` (a zip archive, a legacy file or a bare
//! pickle) beside a fixed, valid config, into a tiny fixed BERT: never panics, never runs
//! anything, and a failed load leaves the model without the adapter.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use burn_adapters::burn::tensor::Device;
use burn_adapters::models::bert::{BertConfig, BertModel};
use burn_adapters::prelude::*;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = include_str!("../../tests/fixtures/bin/ln_before/adapter_config.json");

fn model() -> &'static BertModel {
    static MODEL: OnceLock<BertModel> = OnceLock::new();
    MODEL.get_or_init(|| BertConfig::tiny().init(&Device::flex()).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let root = Path::new("/dev/shm").join(format!("burn-adapters-fuzz-pt-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("adapter_config.json"), CONFIG).unwrap();
    std::fs::write(root.join("pytorch_adapter.bin"), data).unwrap();
    let mut model = model().clone();
    match model.load_adapter(&root) {
        Ok(name) => assert!(model.has_adapter(&name)),
        Err(_) => assert!(model.adapter_names().is_empty()),
    }
});
