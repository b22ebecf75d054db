//! `load_adapter` / `load_adapter_fusion` on an arbitrary `adapter_config.json`,
//! `head_config.json` or `adapter_fusion_config.json` (chosen by the first input byte) beside
//! valid weights, into a tiny fixed BERT: never panics, and a failed load leaves no adapter, head
//! or fusion behind.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use burn_adapters::burn::tensor::Device;
use burn_adapters::models::bert::{BertConfig, BertModel};
use burn_adapters::prelude::*;
use libfuzzer_sys::fuzz_target;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");

/// A model holding the two adapters the fusion fixture fuses.
fn fusion_host() -> &'static BertModel {
    static MODEL: OnceLock<BertModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let mut model = BertConfig::tiny().init(&Device::flex()).unwrap();
        let dir = Path::new(FIXTURES).join("composition/fuse_dynamic");
        model.load_adapter(dir.join("a")).unwrap();
        model.load_adapter(dir.join("b")).unwrap();
        model
    })
}

/// A scratch directory per fuzzing process, holding copies of `fixture`'s files.
fn scratch(fixture: &str) -> std::path::PathBuf {
    let root = Path::new("/dev/shm")
        .join(format!("burn-adapters-fuzz-cf-{}", std::process::id()))
        .join(fixture.replace('/', "_"));
    if !root.exists() {
        std::fs::create_dir_all(&root).unwrap();
        for entry in std::fs::read_dir(Path::new(FIXTURES).join(fixture)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, root.join(path.file_name().unwrap())).unwrap();
        }
    }
    root
}

fuzz_target!(|data: &[u8]| {
    let Some((choice, json)) = data.split_first() else {
        return;
    };
    match choice % 3 {
        0 | 1 => {
            let dir = scratch("bin/seq_bn_head");
            let file = if choice % 3 == 0 {
                "adapter_config.json"
            } else {
                "head_config.json"
            };
            let other = if choice % 3 == 0 {
                "head_config.json"
            } else {
                "adapter_config.json"
            };
            std::fs::copy(
                Path::new(FIXTURES).join("bin/seq_bn_head").join(other),
                dir.join(other),
            )
            .unwrap();
            std::fs::write(dir.join(file), json).unwrap();
            let mut model = fusion_host().clone();
            let before = model.adapter_names();
            match model.load_adapter(&dir) {
                Ok(name) => assert!(model.has_adapter(&name)),
                Err(_) => {
                    assert_eq!(model.adapter_names(), before);
                    assert!(!model.has_head("seq_bn_head") && !model.has_head("seq_bn"));
                }
            }
        }
        _ => {
            let dir = scratch("composition/fuse_dynamic/fusion");
            std::fs::write(dir.join("adapter_fusion_config.json"), json).unwrap();
            let mut model = fusion_host().clone();
            match model.load_adapter_fusion(&dir) {
                Ok(_) => assert_eq!(model.registry().fusions().count(), 1),
                Err(_) => assert_eq!(model.registry().fusions().count(), 0),
            }
        }
    }
});
