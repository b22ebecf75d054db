//! Reading a Hugging Face decoder's weights: single or sharded safetensors files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Loads every file into `model` through the store `store` opens for it. Each file may hold
/// part of the tensors (shards); tensors the model does not use are ignored, and a tensor no
/// file holds is an error naming it.
pub(crate) fn load_weights<M: Module>(
    model: &mut M,
    files: &[PathBuf],
    store: impl Fn(&Path) -> SafetensorsStore,
) -> Result<()> {
    let mut missing: Option<BTreeSet<String>> = None;
    for file in files {
        let mut store = store(file).allow_partial(true);
        let result = model
            .load_from(&mut store)
            .map_err(|e| Error::format(file, e.to_string()))?;
        if let Some(error) = result.errors.first() {
            return Err(Error::format(file, format!("{error:?}")));
        }
        let here: BTreeSet<String> = result.missing.into_iter().map(|(path, _)| path).collect();
        missing = Some(match missing {
            Some(before) => before.intersection(&here).cloned().collect(),
            None => here,
        });
    }
    match missing.and_then(|m| m.into_iter().next()) {
        Some(key) => Err(Error::MissingTensor {
            path: files[0].clone(),
            key,
        }),
        None => Ok(()),
    }
}

/// The safetensors files of a model directory: `model.safetensors`, or the shards of
/// `model.safetensors.index.json`.
pub(crate) fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    if !index_path.is_file() {
        return Err(Error::io(
            &single,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file (nor a model.safetensors.index.json)",
            ),
        ));
    }
    #[derive(Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
    let index: Index = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: index_path.clone(),
        field: "weight_map".into(),
        reason: e.to_string(),
    })?;
    let shards: BTreeSet<&String> = index.weight_map.values().collect();
    shards
        .into_iter()
        .map(|shard| {
            let path = dir.join(shard);
            let inside = Path::new(shard).components().count() == 1;
            if inside && path.is_file() {
                Ok(path)
            } else {
                Err(Error::Json {
                    path: index_path.clone(),
                    field: format!("weight_map.{shard}"),
                    reason: "not a file in the model directory".into(),
                })
            }
        })
        .collect()
}
