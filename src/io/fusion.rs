//! AdapterHub's fusion directory: `adapter_fusion_config.json` +
//! `model_adapter_fusion.safetensors` (or `pytorch_model_adapter_fusion.bin`).

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::Module;
use serde_json::{Value, json};

use super::adapterhub::{
    FORMAT_VERSION, read_consistently, read_envelope, read_weights, reject_unused, with_checksum,
};
use super::keys::ReferenceName;
use super::tensors::{TensorMap, safetensors_bytes, write_atomically};
use super::transfer::{Collect, Fill};
use crate::config::FusionConfig;
use crate::error::{Error, Result};
use crate::methods::Fusion;
use crate::model::{AdapterModel, build_fusions};

/// Name of the fusion config file.
pub const FUSION_CONFIG_FILE: &str = "adapter_fusion_config.json";
/// Name of the safetensors fusion weights file.
pub const FUSION_WEIGHTS_FILE: &str = "model_adapter_fusion.safetensors";
/// Name of the PyTorch fusion weights file.
pub const PYTORCH_FUSION_WEIGHTS_FILE: &str = "pytorch_model_adapter_fusion.bin";

/// AdapterHub's name of a fusion parameter (`query.weight`, ...): the same path, torch layout.
fn fusion_name(path: &str) -> Option<ReferenceName> {
    let (module, field) = path.split_once('.')?;
    if !matches!(module, "query" | "key" | "value") {
        return None;
    }
    let transpose = match field {
        "weight" => true,
        "bias" => false,
        _ => return None,
    };
    Some(ReferenceName {
        names: vec![path.to_string()],
        transpose,
    })
}

/// Where a site's fusion layers sit in AdapterHub's naming: beside its `adapters`.
fn fusion_prefix(site_path: &str) -> String {
    let parent = site_path.strip_suffix(".adapters").unwrap_or(site_path);
    format!("{parent}.adapter_fusion_layer")
}

pub(crate) fn save_fusion<M: AdapterModel>(model: &M, dir: &Path, name: &str) -> Result<()> {
    let Some(entry) = model.registry().fusion(name) else {
        return Err(Error::InvalidSetup(format!("no fusion of {name}")));
    };
    let mut tensors = TensorMap::new();
    model.visit_sites(&mut |site| {
        if let Some(fusion) = site.fusions().get(name) {
            fusion.visit(&mut Collect {
                path: Vec::new(),
                prefix: format!(
                    "{}.{name}",
                    fusion_prefix(&model.site_path(site.location()))
                ),
                naming: &fusion_name,
                out: &mut tensors,
            });
        }
    });
    let info = model.model_info();
    let config = json!({
        "adapter_names": entry.1,
        "config": serde_json::to_value(entry.2).expect("fusion configs serialise"),
        "hidden_size": model.hidden_size(),
        "model_class": info.model_class,
        "model_name": info.model_name,
        "model_type": info.model_type,
        "name": name,
        "version": FORMAT_VERSION,
    });
    let weights = safetensors_bytes(&tensors)?;
    let config = with_checksum(config, (FUSION_WEIGHTS_FILE, &weights));
    write_atomically(
        dir,
        &[
            (FUSION_WEIGHTS_FILE, weights),
            (
                FUSION_CONFIG_FILE,
                serde_json::to_vec_pretty(&config).expect("JSON values serialise"),
            ),
        ],
    )
}

/// A fusion read from disk: its adapters, config and per-site layers.
pub(crate) type LoadedFusion = (Vec<String>, FusionConfig, Vec<Option<Fusion>>);

/// Reads the fusion in `dir` and builds its layers for `model`, without changing `model`.
pub(crate) fn read_fusion<M: AdapterModel>(model: &M, dir: &Path) -> Result<LoadedFusion> {
    read_consistently(|| read_fusion_once(model, dir))
}

fn read_fusion_once<M: AdapterModel>(model: &M, dir: &Path) -> Result<LoadedFusion> {
    let path = dir.join(FUSION_CONFIG_FILE);
    let (saved_name, config, file) = read_envelope(&path, model.hidden_size())?;
    let json_error = |field: &str, reason: String| Error::Json {
        path: path.clone(),
        field: field.into(),
        reason,
    };
    let adapters: Vec<String> = match file.get("adapter_names") {
        Some(Value::Array(names)) => names
            .iter()
            .map(|n| {
                n.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| json_error("adapter_names", format!("{n} is not a string")))
            })
            .collect::<Result<_>>()?,
        // Older files only have the name.
        _ => saved_name.split(',').map(str::to_string).collect(),
    };
    let config: FusionConfig = serde_path_to_error::deserialize(&config)
        .map_err(|e| json_error(&format!("config.{}", e.path()), e.into_inner().to_string()))?;
    for adapter in &adapters {
        if !model.has_adapter(adapter) {
            return Err(Error::InvalidSetup(format!(
                "{}: the fusion needs adapter `{adapter}`; load it first",
                path.display()
            )));
        }
    }
    let fusions = build_fusions(model, &adapters, &config)?;
    let (weights, tensors) = read_weights(
        dir,
        FUSION_WEIGHTS_FILE,
        PYTORCH_FUSION_WEIGHTS_FILE,
        Some((&path, &file)),
    )?;
    let device = model.device()?;
    let mut prefixes = Vec::new();
    model.visit_sites(&mut |site| prefixes.push(fusion_prefix(&model.site_path(site.location()))));
    let mut used = BTreeSet::new();
    let fusions = fusions
        .into_iter()
        .zip(prefixes)
        .map(|(fusion, prefix)| {
            let Some(fusion) = fusion else {
                return Ok(None);
            };
            Fill::new(
                format!("{prefix}.{saved_name}"),
                &fusion_name,
                &weights,
                &tensors,
                &mut used,
                &device,
            )
            .fill(fusion)
            .map(Some)
        })
        .collect::<Result<Vec<_>>>()?;
    reject_unused(weights, &tensors, &used)?;
    Ok((adapters, config, fusions))
}
