//! Runs a Hugging Face BERT with adapters from the shell and prints its hidden states as JSON.
//!
//! ```text
//! cargo run --release --example adapter_infer -- --model <hf-bert-dir> --adapter <adapter-dir> \
//!     [--adapter <dir> ...] [--fusion <dir> ...] [--device flex] --active <setup> [--merge] --input <json-file>
//! ```
//!
//! The input file is `{"input_ids": [[...]], "attention_mask": [[...]]}`; stdout is exactly one
//! JSON object `{"last_hidden_state": [[[...]]]}`. `<setup>` is an adapter name or a composition
//! such as `Stack[a, b]`, `Fuse[a, b]` (with `--fusion`), `Parallel[a, b]` (the output then has
//! one batch per branch). `--merge` folds the active LoRA/IA3 adapter into the weights first.
//! Errors go to stderr with exit code 1.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_adapters::backend::device_by_name;
use burn_adapters::models::bert::{BertInput, BertModel};
use burn_adapters::prelude::*;
use serde_json::Value;

// burn-flex allocates a buffer per op; mimalloc keeps freed ones instead of handing them back to the
// OS as glibc does for large blocks: the CPU forward gets ~15 % faster (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    model: PathBuf,
    adapters: Vec<PathBuf>,
    fusions: Vec<PathBuf>,
    device: String,
    active: Option<String>,
    merge: bool,
    input: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut model, mut adapters, mut fusions, mut active, mut merge, mut input) =
        (None, Vec::new(), Vec::new(), None, false, None);
    let mut device = "flex".to_string();
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--adapter" => adapters.push(PathBuf::from(value()?)),
            "--fusion" => fusions.push(PathBuf::from(value()?)),
            "--device" => device = value()?,
            "--active" => active = Some(value()?),
            "--input" => input = Some(PathBuf::from(value()?)),
            "--merge" => merge = true,
            "-h" | "--help" => {
                return Err("usage: adapter_infer --model DIR [--adapter DIR]... [--fusion DIR]... [--device flex|wgpu|tch|cuda] [--active SETUP] [--merge] --input FILE".into());
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Args {
        model: model.ok_or("--model is required")?,
        adapters,
        fusions,
        device,
        active,
        merge,
        input: input.ok_or("--input is required")?,
    })
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

fn run() -> Result<String, String> {
    let args = parse_args()?;
    let device = device_by_name(&args.device).map_err(|e| e.to_string())?;
    let mut model = BertModel::from_pretrained(&args.model, &device).map_err(|e| e.to_string())?;
    for dir in &args.adapters {
        model.load_adapter(dir).map_err(|e| e.to_string())?;
    }
    for dir in &args.fusions {
        model.load_adapter_fusion(dir).map_err(|e| e.to_string())?;
    }
    if let Some(active) = &args.active {
        let setup = active.into_setup().map_err(|e| e.to_string())?;
        if args.merge {
            let AdapterSetup::Name(name) = &setup else {
                return Err(format!(
                    "--merge needs a single active adapter, not `{setup}`"
                ));
            };
            model.merge_adapter(name).map_err(|e| e.to_string())?;
        }
        model
            .set_active_adapters(setup)
            .map_err(|e| e.to_string())?;
    } else if args.merge {
        return Err("--merge needs --active".into());
    }
    let text = std::fs::read_to_string(&args.input)
        .map_err(|e| format!("{}: {e}", args.input.display()))?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", args.input.display()))?;
    let input_ids = matrix(&json, "input_ids", &device)?;
    let attention_mask = match json.get("attention_mask") {
        Some(_) => matrix(&json, "attention_mask", &device)?,
        None => Tensor::ones(input_ids.dims(), &device),
    };
    // The model checks shapes, the sequence length and the id range.
    let hidden = model
        .try_forward(BertInput::new(input_ids, attention_mask))
        .map_err(|e| format!("input: {e}"))?
        .last_hidden_state;
    let [batch, seq, width] = hidden.dims();
    let values = hidden
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
    // Serialising the f32 values directly prints their shortest round-trip form.
    let out = std::collections::BTreeMap::from([("last_hidden_state", nested)]);
    serde_json::to_string(&out).map_err(|e| e.to_string())
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
