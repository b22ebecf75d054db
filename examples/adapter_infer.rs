//! Runs a Hugging Face BERT, Llama-family or GPT-2 decoder with adapters from the shell and prints its
//! outputs as JSON.
//!
//! ```text
//! cargo run --release --example adapter_infer -- --model <hf-dir> [--adapter <adapterhub-dir> ...] \
//!     [--peft <peft-dir> ...] [--fusion <dir> ...] [--device flex] [--active <setup>] [--merge] \
//!     [--generate N] [--save-pretrained <dir>] --input <json-file>
//! ```
//!
//! The model type comes from `config.json` (`bert`, or `llama`/`mistral`/`qwen2`/`gpt2`). The input file is
//! `{"input_ids": [[...]], "attention_mask": [[...]]}` (decoders pad on the left); stdout is exactly
//! one JSON object: `{"last_hidden_state": [[[...]]]}` for BERT, `{"logits": [[[...]]]}` for a
//! decoder, or with `--generate N` `{"generated": [[...]]}`, N greedy tokens per row without the
//! prompt. `--peft` loads a PEFT LoRA named after its directory. `<setup>` is an adapter name or a
//! composition such as `Stack[a, b]`, `Fuse[a, b]` (with `--fusion`), `Parallel[a, b]` (the output
//! then has one batch per branch). `--merge` folds the active LoRA/IA3 adapter into the weights
//! first; `--save-pretrained <dir>` then writes the model, with the merged adapter folded in and no
//! other adapter, as a Hugging Face directory that transformers runs alone. Errors go to stderr with
//! exit code 1.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_adapters::backend::device_by_name;
use burn_adapters::generation::{CausalLm, GenerationConfig, generate};
use burn_adapters::models::bert::{BertInput, BertModel};
use burn_adapters::models::gpt2::Gpt2Model;
use burn_adapters::models::llama::{DecoderInput, LlamaModel};
use burn_adapters::prelude::*;
use serde_json::Value;

// burn-flex allocates a buffer per op; mimalloc keeps freed ones instead of handing them back to the
// OS as glibc does for large blocks: the CPU forward gets ~15 % faster (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    model: PathBuf,
    adapters: Vec<PathBuf>,
    peft: Vec<PathBuf>,
    fusions: Vec<PathBuf>,
    device: String,
    active: Option<String>,
    merge: bool,
    generate: Option<usize>,
    save_pretrained: Option<PathBuf>,
    input: PathBuf,
}

const USAGE: &str = "usage: adapter_infer --model DIR [--adapter DIR]... [--peft DIR]... \
[--fusion DIR]... [--device flex|wgpu|tch|cuda] [--active SETUP] [--merge] [--generate N] [--save-pretrained DIR] --input FILE";

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let mut parsed = Args {
        model: PathBuf::new(),
        adapters: Vec::new(),
        peft: Vec::new(),
        fusions: Vec::new(),
        device: "flex".to_string(),
        active: None,
        merge: false,
        generate: None,
        save_pretrained: None,
        input: PathBuf::new(),
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => parsed.model = PathBuf::from(value()?),
            "--adapter" => parsed.adapters.push(PathBuf::from(value()?)),
            "--peft" => parsed.peft.push(PathBuf::from(value()?)),
            "--fusion" => parsed.fusions.push(PathBuf::from(value()?)),
            "--device" => parsed.device = value()?,
            "--active" => parsed.active = Some(value()?),
            "--input" => parsed.input = PathBuf::from(value()?),
            "--merge" => parsed.merge = true,
            "--save-pretrained" => parsed.save_pretrained = Some(PathBuf::from(value()?)),
            "--generate" => {
                let n = value()?;
                let n = n
                    .parse()
                    .map_err(|_| format!("--generate {n}: not a count"))?;
                parsed.generate = Some(n);
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if parsed.model.as_os_str().is_empty() {
        return Err("--model is required".into());
    }
    if parsed.input.as_os_str().is_empty() {
        return Err("--input is required".into());
    }
    Ok(parsed)
}

/// A `[batch, seq]` integer matrix from the input JSON.
fn matrix(json: &Value, key: &str, device: &Device) -> Result<Tensor<2, Int>, String> {
    let rows = json.get(key).and_then(Value::as_array).ok_or(format!(
        "input: `{key}` must be a list of lists of integers"
    ))?;
    let width = rows.first().and_then(Value::as_array).map_or(0, Vec::len);
    let mut values = Vec::with_capacity(rows.len() * width);
    for (i, row) in rows.iter().enumerate() {
        let row = row
            .as_array()
            .ok_or(format!("input: `{key}[{i}]` is not a list"))?;
        if row.len() != width {
            return Err(format!(
                "input: `{key}[{i}]` has {} entries, expected {width}",
                row.len()
            ));
        }
        for v in row {
            values.push(
                v.as_i64()
                    .ok_or(format!("input: `{key}[{i}]` holds a non-integer {v}"))?,
            );
        }
    }
    if values.is_empty() {
        return Err(format!("input: `{key}` is empty"));
    }
    Ok(Tensor::from_data(
        TensorData::new(values, [rows.len(), width]),
        device,
    ))
}

/// transformers' `model_type` of the directory (`bert` when absent, as in old checkpoints).
fn model_type(dir: &std::path::Path) -> Result<String, String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(json
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("bert")
        .to_string())
}

/// Loads the adapters, fusions and PEFT LoRAs, merges and activates as the flags say.
fn prepare<M: AdapterModel>(model: &mut M, args: &Args) -> Result<(), String> {
    for dir in &args.adapters {
        model.load_adapter(dir).map_err(|e| e.to_string())?;
    }
    for dir in &args.peft {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or(format!("--peft {}: no directory name", dir.display()))?;
        model
            .load_peft_adapter(dir, name)
            .map_err(|e| e.to_string())?;
    }
    for dir in &args.fusions {
        model.load_adapter_fusion(dir).map_err(|e| e.to_string())?;
    }
    let Some(active) = &args.active else {
        return match args.merge {
            true => Err("--merge needs --active".into()),
            false => Ok(()),
        };
    };
    let setup = active.into_setup().map_err(|e| e.to_string())?;
    if args.merge {
        let AdapterSetup::Name(name) = &setup else {
            return Err(format!(
                "--merge needs a single active adapter, not `{setup}`"
            ));
        };
        model.merge_adapter(name).map_err(|e| e.to_string())?;
    }
    model.set_active_adapters(setup).map_err(|e| e.to_string())
}

/// The input file's ids and mask (all ones when absent).
fn read_input(args: &Args, device: &Device) -> Result<(Tensor<2, Int>, Tensor<2, Int>), String> {
    let text = std::fs::read_to_string(&args.input)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", args.input.display()))?;
    let input_ids = matrix(&json, "input_ids", device)?;
    let attention_mask = match json.get("attention_mask") {
        Some(_) => matrix(&json, "attention_mask", device)?,
        None => Tensor::ones(input_ids.dims(), device),
    };
    Ok((input_ids, attention_mask))
}

/// `{key: [[[...]]]}`; serialising the f32 values directly prints their shortest round-trip form.
fn json_3d(key: &str, tensor: Tensor<3>) -> Result<String, String> {
    let [batch, seq, width] = tensor.dims();
    let values = tensor
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    let nested: Vec<Vec<Vec<f32>>> = (0..batch)
        .map(|b| {
            (0..seq)
                .map(|s| values[(b * seq + s) * width..][..width].to_vec())
                .collect()
        })
        .collect();
    let out = std::collections::BTreeMap::from([(key, nested)]);
    serde_json::to_string(&out).map_err(|e| e.to_string())
}

fn run_bert(args: &Args, device: &Device) -> Result<String, String> {
    if args.generate.is_some() {
        return Err("--generate needs a decoder, not a BERT encoder".into());
    }
    let mut model = BertModel::from_pretrained(&args.model, device).map_err(|e| e.to_string())?;
    prepare(&mut model, args)?;
    if let Some(dir) = &args.save_pretrained {
        model.save_pretrained(dir).map_err(|e| e.to_string())?;
    }
    let (ids, mask) = read_input(args, device)?;
    // The model checks shapes, the sequence length and the id range.
    let hidden = model
        .try_forward(BertInput::new(ids, mask))
        .map_err(|e| format!("input: {e}"))?
        .last_hidden_state;
    json_3d("last_hidden_state", hidden)
}

/// Logits or greedy tokens of a causal LM, after its adapters are prepared.
fn run_decoder<M: AdapterModel + CausalLm>(
    mut model: M,
    pad_token_id: Option<usize>,
    forward: fn(&M, DecoderInput) -> burn_adapters::Result<Tensor<3>>,
    save: fn(&M, &Path) -> burn_adapters::Result<()>,
    args: &Args,
    device: &Device,
) -> Result<String, String> {
    prepare(&mut model, args)?;
    if let Some(dir) = &args.save_pretrained {
        save(&model, dir).map_err(|e| e.to_string())?;
    }
    let (ids, mask) = read_input(args, device)?;
    let Some(tokens) = args.generate else {
        let logits =
            forward(&model, DecoderInput::new(ids, mask)).map_err(|e| format!("input: {e}"))?;
        return json_3d("logits", logits);
    };
    let config = GenerationConfig::new(tokens).with_pad_token_id(pad_token_id.unwrap_or(0));
    let generated =
        generate(&model, ids, mask, &config, |_, _| {}).map_err(|e| format!("input: {e}"))?;
    let out = std::collections::BTreeMap::from([("generated", generated)]);
    serde_json::to_string(&out).map_err(|e| e.to_string())
}

fn run() -> Result<String, String> {
    let args = parse_args()?;
    let device = device_by_name(&args.device).map_err(|e| e.to_string())?;
    match model_type(&args.model)?.as_str() {
        "bert" => run_bert(&args, &device),
        "llama" | "mistral" | "qwen2" => {
            let model =
                LlamaModel::from_pretrained(&args.model, &device).map_err(|e| e.to_string())?;
            let pad = model.config().pad_token_id;
            let save = |m: &LlamaModel, dir: &Path| m.save_pretrained(dir);
            run_decoder(model, pad, LlamaModel::try_forward, save, &args, &device)
        }
        "gpt2" => {
            let model =
                Gpt2Model::from_pretrained(&args.model, &device).map_err(|e| e.to_string())?;
            let pad = model.config().pad_token_id;
            let save = |m: &Gpt2Model, dir: &Path| m.save_pretrained(dir);
            run_decoder(model, pad, Gpt2Model::try_forward, save, &args, &device)
        }
        other => Err(format!(
            "{}: model_type `{other}` is not one of bert, llama, mistral, qwen2, gpt2",
            args.model.display()
        )),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("adapter_infer: {message}");
            ExitCode::FAILURE
        }
    }
}
