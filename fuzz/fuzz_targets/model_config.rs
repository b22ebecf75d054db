//! Hugging Face model directories: an arbitrary BERT `config.json` (first input byte 0), an
//! arbitrary Llama-family or GPT-2 `config.json` (1 and 3: a config that reads back must also
//! write and read back as itself), or an arbitrary `model.safetensors.index.json` beside a valid
//! decoder config (2: its shard names may point anywhere, even at the config itself). Nothing
//! panics.
#![no_main]

use std::path::{Path, PathBuf};

use burn_adapters::burn::tensor::Device;
use burn_adapters::models::bert::BertConfig;
use burn_adapters::models::gpt2::Gpt2Config;
use burn_adapters::models::llama::{LlamaConfig, LlamaModel};
use libfuzzer_sys::fuzz_target;

const DECODER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/decoder/qwen2/base/config.json"
);

/// An empty scratch directory per fuzzing process.
fn scratch() -> PathBuf {
    let root = Path::new("/dev/shm").join(format!("burn-adapters-fuzz-mc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

fuzz_target!(|data: &[u8]| {
    let Some((choice, bytes)) = data.split_first() else {
        return;
    };
    let dir = scratch();
    match choice % 4 {
        0 => {
            std::fs::write(dir.join("config.json"), bytes).unwrap();
            let _ = BertConfig::from_file(dir.join("config.json"));
        }
        1 => {
            std::fs::write(dir.join("config.json"), bytes).unwrap();
            if let Ok(config) = LlamaConfig::from_file(dir.join("config.json")) {
                let text = serde_json::to_string(&config).unwrap();
                std::fs::write(dir.join("config.json"), text).unwrap();
                let again = LlamaConfig::from_file(dir.join("config.json")).unwrap();
                assert_eq!(again, config);
            }
        }
        3 => {
            std::fs::write(dir.join("config.json"), bytes).unwrap();
            if let Ok(config) = Gpt2Config::from_file(dir.join("config.json")) {
                let text = serde_json::to_string(&config).unwrap();
                std::fs::write(dir.join("config.json"), text).unwrap();
                let again = Gpt2Config::from_file(dir.join("config.json")).unwrap();
                assert_eq!(again, config);
            }
        }
        _ => {
            std::fs::copy(DECODER, dir.join("config.json")).unwrap();
            std::fs::write(dir.join("model.safetensors.index.json"), bytes).unwrap();
            let _ = LlamaModel::from_pretrained(&dir, &Device::flex());
        }
    }
});
