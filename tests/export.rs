//! `save_pretrained`: BERT, Llama-family and GPT-2 hosts written as Hugging Face directories,
//! with a LoRA-family adapter merged, reload here with the merged model's outputs and hold
//! exactly the checkpoint's tensors; under `BURN_ADAPTERS_EXPORT_MERGED` they are written for
//! `tools/check_hf_export.py`, which runs them in transformers alone (CI).

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use burn_adapters::models::bert::BertModel;
use burn_adapters::models::gpt2::Gpt2Model;
use burn_adapters::models::llama::LlamaModel;
use burn_adapters::prelude::*;
use common::decoder::*;
use common::families::{Family, export_root};
use common::*;

/// A host that writes and reads Hugging Face directories.
trait Pretrained: Family {
    fn save(&self, dir: &Path);
    fn reload(dir: &Path, device: &Device) -> Self;
    /// The output compared: all positions for BERT, the real tokens for the decoders.
    fn compared(&self, device: &Device) -> Vec<f32> {
        let output = self.output(device);
        values(match Self::OUTPUT {
            "logits" => at_tokens(output, &decoder_inputs(device)),
            _ => output,
        })
    }
}

impl Pretrained for BertModel {
    fn save(&self, dir: &Path) {
        self.save_pretrained(dir).unwrap();
    }
    fn reload(dir: &Path, device: &Device) -> Self {
        BertModel::from_pretrained(dir, device).unwrap()
    }
}

impl Pretrained for LlamaModel {
    fn save(&self, dir: &Path) {
        self.save_pretrained(dir).unwrap();
    }
    fn reload(dir: &Path, device: &Device) -> Self {
        LlamaModel::from_pretrained(dir, device).unwrap()
    }
}

impl Pretrained for Gpt2Model {
    fn save(&self, dir: &Path) {
        self.save_pretrained(dir).unwrap();
    }
    fn reload(dir: &Path, device: &Device) -> Self {
        Gpt2Model::from_pretrained(dir, device).unwrap()
    }
}

/// The tensor names of a safetensors file.
fn tensor_names(file: &Path) -> Vec<String> {
    let bytes = std::fs::read(file).unwrap();
    let mut names: Vec<String> = safetensors::SafeTensors::deserialize(&bytes)
        .unwrap()
        .names()
        .into_iter()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// Loads `adapter` (a fixture directory) into `model`, merges it and exports the model to
/// `root/label`: the export holds the checkpoint's tensors (`checkpoint`), reloads with the
/// merged outputs, and leaves `model` as it was.
fn exports_merged<F: Pretrained>(
    mut model: F,
    adapter: &Path,
    checkpoint: &Path,
    root: &Path,
    label: &str,
    device: &Device,
) {
    let name = model.load_adapter(adapter).unwrap();
    model.set_active_adapters(name.as_str()).unwrap();
    let adapted = model.compared(device);
    model.merge_adapter(&name).unwrap();
    let dir = root.join(label);
    model.save(&dir);
    assert_eq!(
        tensor_names(&dir.join("model.safetensors")),
        tensor_names(checkpoint),
        "{label}"
    );
    let reloaded = F::reload(&dir, device);
    let d = max_abs_diff(&reloaded.compared(device), &as_f64(&adapted));
    println!("{label:<16} reloaded export vs adapted model: max |Δ| {d:.2e}");
    assert!(d <= 1e-5, "{label}: {d}");
    let full: Tensor<3> = model.output(device);
    let dims = full.dims();
    write_f32(
        &dir.join("expected.safetensors"),
        "output",
        &values(full),
        &dims,
    );
}

fn as_f64(values: &[f32]) -> Vec<f64> {
    values.iter().map(|v| *v as f64).collect()
}

fn decoder_base(family: &str) -> PathBuf {
    fixtures().join("decoder").join(family).join("base")
}

#[test]
fn merged_loras_export_as_hugging_face_models() {
    let device = device();
    let (_scratch, root) = export_root("BURN_ADAPTERS_EXPORT_MERGED");
    let bert_checkpoint = fixtures().join("base/model.safetensors");
    for (label, adapter) in [
        ("bert_lora", "lora/lora_qkv_ffn"),
        ("bert_ia3", "lora/ia3_with_output"),
        ("bert_dora", "variants/bert/dora"),
    ] {
        let adapter = fixtures().join(adapter);
        let model = BertModel::base(&device);
        exports_merged(model, &adapter, &bert_checkpoint, &root, label, &device);
    }
    let decoder_cases = [
        ("llama_lora", "llama", "decoder/llama/cases/lora_all"),
        ("llama_dora", "llama", "variants/llama/dora_ffn"),
        ("llama_mtl_lora", "llama", "mtl_lora/llama/mtl_linear"),
        ("qwen2_ia3", "qwen2", "decoder/qwen2/cases/ia3"),
        ("gpt2_lora_qv", "gpt2", "decoder/gpt2/cases/lora_qv"),
        ("gpt2_ia3", "gpt2", "decoder/gpt2/cases/ia3"),
    ];
    for (label, family, adapter) in decoder_cases {
        let base = decoder_base(family);
        let (adapter, checkpoint) = (fixtures().join(adapter), base.join("model.safetensors"));
        match family {
            "gpt2" => {
                let model = Gpt2Model::from_pretrained(&base, &device).unwrap();
                exports_merged(model, &adapter, &checkpoint, &root, label, &device);
            }
            _ => {
                let model = LlamaModel::from_pretrained(&base, &device).unwrap();
                exports_merged(model, &adapter, &checkpoint, &root, label, &device);
            }
        }
    }
}

/// Without a merged adapter the export is the checkpoint itself: the same tensors, bit for bit.
#[test]
fn an_unadapted_export_is_the_checkpoint() {
    let device = device();
    let scratch = tempfile::tempdir().unwrap();
    let mut model = LlamaModel::from_pretrained(decoder_base("mistral"), &device).unwrap();
    model
        .add_adapter(
            "unmerged",
            AdapterConfig::load("seq_bn|lora[init_weights=bert]").unwrap(),
        )
        .unwrap();
    model.set_active_adapters("unmerged").unwrap();
    model.save_pretrained(scratch.path()).unwrap();
    let checkpoint = decoder_base("mistral").join("model.safetensors");
    for name in tensor_names(&checkpoint) {
        let (shape, want) = read_tensor(&checkpoint, &name);
        let (got_shape, got) = read_tensor(&scratch.path().join("model.safetensors"), &name);
        assert_eq!((got_shape, got), (shape, want), "{name}");
    }
}

/// A directory that cannot be written is an error naming the path, and no file is left.
#[test]
fn an_unwritable_directory_is_an_error_naming_it() {
    let device = device();
    let scratch = tempfile::tempdir().unwrap();
    let blocked = scratch.path().join("file");
    std::fs::write(&blocked, b"not a directory").unwrap();
    let err = BertModel::base(&device)
        .save_pretrained(&blocked)
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("file"), "{err}");
    assert_eq!(std::fs::read(&blocked).unwrap(), b"not a directory");
}
