//! Tensor files on the host: reading safetensors and PyTorch archives into f32 arrays, and
//! writing safetensors atomically.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use burn::store::pytorch_reader::{DType as PtDType, PytorchReader};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// A tensor as stored in a file, converted to f32, in the file's (torch) layout.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

impl HostTensor {
    /// The transpose of a 2-D tensor (torch `[out, in]` ↔ burn `[in, out]`).
    pub fn transposed(&self) -> Self {
        let [rows, cols] = [self.shape[0], self.shape[1]];
        let mut values = vec![0.0; self.values.len()];
        for r in 0..rows {
            for c in 0..cols {
                values[c * rows + r] = self.values[r * cols + c];
            }
        }
        Self {
            shape: vec![cols, rows],
            values,
        }
    }
}

/// Named tensors read from one file.
pub type TensorMap = BTreeMap<String, HostTensor>;

/// The float encodings adapter files use.
#[derive(Clone, Copy)]
enum FloatKind {
    F32,
    F64,
    F16,
    Bf16,
}

fn bytes_to_f32(kind: FloatKind, bytes: &[u8]) -> Vec<f32> {
    let chunks = |n: usize| bytes.chunks_exact(n);
    match kind {
        FloatKind::F32 => chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        FloatKind::F64 => chunks(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        FloatKind::F16 => chunks(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        FloatKind::Bf16 => chunks(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
    }
}

fn not_float(path: &Path, key: &str, dtype: impl std::fmt::Debug) -> Error {
    Error::format(
        path,
        format!("tensor `{key}` has dtype {dtype:?}; expected a float type"),
    )
}

/// Reads every tensor of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| Error::format(path, e.to_string()))?;
    let mut out = TensorMap::new();
    for (key, view) in file.tensors() {
        let kind = match view.dtype() {
            Dtype::F32 => FloatKind::F32,
            Dtype::F64 => FloatKind::F64,
            Dtype::F16 => FloatKind::F16,
            Dtype::BF16 => FloatKind::Bf16,
            other => return Err(not_float(path, &key, other)),
        };
        let values = bytes_to_f32(kind, view.data());
        out.insert(
            key,
            HostTensor {
                shape: view.shape().to_vec(),
                values,
            },
        );
    }
    Ok(out)
}

/// Reads a PyTorch `state_dict` archive (`torch.save`). burn's reader interprets the pickle
/// stream without executing it: only tensor archives are accepted, anything else is an error.
pub fn read_pytorch(path: &Path) -> Result<TensorMap> {
    let reader = PytorchReader::new(path).map_err(|e| Error::format(path, e.to_string()))?;
    let mut out = TensorMap::new();
    for (key, tensor) in reader.tensors() {
        let kind = match tensor.dtype() {
            PtDType::F32 => FloatKind::F32,
            PtDType::F64 => FloatKind::F64,
            PtDType::F16 => FloatKind::F16,
            PtDType::BF16 => FloatKind::Bf16,
            other => return Err(not_float(path, key, other)),
        };
        let bytes = tensor
            .read()
            .map_err(|e| Error::format(path, format!("tensor `{key}`: {e}")))?;
        let values = bytes_to_f32(kind, &bytes);
        out.insert(
            key.clone(),
            HostTensor {
                shape: tensor.shape().to_vec(),
                values,
            },
        );
    }
    Ok(out)
}

struct F32View<'a>(&'a HostTensor);

impl safetensors::View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        self.0
            .values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()
    }
    fn data_len(&self) -> usize {
        self.0.values.len() * 4
    }
}

/// Serialises `tensors` as safetensors (f32, torch's `{"format": "pt"}` metadata).
pub fn safetensors_bytes(tensors: &TensorMap) -> Result<Vec<u8>> {
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(
        tensors.iter().map(|(k, t)| (k.as_str(), F32View(t))),
        Some(metadata),
    )
    .map_err(|e| Error::format("<memory>", e.to_string()))
}

/// Writes `files` (name, bytes) into `dir` so that a reader never sees a partial adapter.
///
/// The last file is the one that makes the directory loadable (the config). It is removed first,
/// every file is written to a temporary in the same directory, synced and renamed into place, and
/// the config comes last. Any intermediate state therefore lacks a config and is rejected by
/// loaders, instead of pairing new weights with an old config.
pub fn write_atomically(dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if let Some((marker, _)) = files.last() {
        let marker = dir.join(marker);
        match std::fs::remove_file(&marker) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(marker, e)),
        }
    }
    for (name, bytes) in files {
        let target = dir.join(name);
        let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, &target)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(Error::io(target, e));
        }
    }
    Ok(())
}
