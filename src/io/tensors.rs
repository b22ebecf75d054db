//! Tensor files on the host: reading safetensors and PyTorch archives into f32 arrays, and
//! writing safetensors atomically.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use burn::store::pytorch_reader::{DType as PtDType, PickleValue, PytorchReader};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// A tensor as stored in a file, converted to f32, in the file's (torch) layout.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

impl HostTensor {
    /// The transpose of the last two dimensions (torch `[out, in]` ↔ burn `[in, out]`); a
    /// rank-1 tensor is its own.
    pub(crate) fn transposed(&self) -> Self {
        let rank = self.shape.len();
        if rank < 2 {
            return self.clone();
        }
        let [rows, cols] = [self.shape[rank - 2], self.shape[rank - 1]];
        let mut values = vec![0.0; self.values.len()];
        for (matrix, out) in self
            .values
            .chunks(rows * cols)
            .zip(values.chunks_mut(rows * cols))
        {
            for r in 0..rows {
                for c in 0..cols {
                    out[c * rows + r] = matrix[r * cols + c];
                }
            }
        }
        let mut shape = self.shape.clone();
        shape.swap(rank - 2, rank - 1);
        Self { shape, values }
    }
}

/// Named tensors read from one file.
pub(crate) type TensorMap = BTreeMap<String, HostTensor>;

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

/// The checksum a saved config records for each weights file beside it (CRC-32, as zip uses):
/// a reader that finds another checksum holds files from two different saves.
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Every tensor of a safetensors file already in memory (`path` names it in errors).
pub(crate) fn parse_safetensors(path: &Path, bytes: &[u8]) -> Result<TensorMap> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| Error::format(path, e.to_string()))?;
    if let Some(key) = duplicated_header_key(bytes) {
        return Err(Error::format(
            path,
            format!("the header lists tensor `{key}` more than once"),
        ));
    }
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

/// A key the JSON header of a (well-formed) safetensors file lists twice. The safetensors crate
/// keeps the last one silently; a file that names a tensor twice is ambiguous and is refused.
fn duplicated_header_key(bytes: &[u8]) -> Option<String> {
    struct Duplicate(Option<String>);
    impl<'de> serde::Deserialize<'de> for Duplicate {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Keys;
            impl<'de> serde::de::Visitor<'de> for Keys {
                type Value = Duplicate;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Duplicate, A::Error> {
                    let mut seen = std::collections::HashSet::new();
                    let mut duplicate = None;
                    while let Some(key) = map.next_key::<String>()? {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        if !seen.insert(key.clone()) && duplicate.is_none() {
                            duplicate = Some(key);
                        }
                    }
                    Ok(Duplicate(duplicate))
                }
            }
            d.deserialize_map(Keys)
        }
    }
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let header = bytes.get(8..8usize.checked_add(usize::try_from(len).ok()?)?)?;
    serde_json::from_slice::<Duplicate>(header).ok()?.0
}

/// Reads a PyTorch `state_dict` archive (`torch.save`).
///
/// burn's reader interprets the pickle stream as data and never calls what it names (a
/// `posix.system` reduce stays an inert placeholder). On top of that only plain tensor archives
/// are accepted: the root must be a dictionary whose every value is a tensor; any other object
/// (a number, a string, a placeholder for an arbitrary Python call) is an error naming its key.
pub(crate) fn read_pytorch(path: &Path) -> Result<TensorMap> {
    let format = |e: &dyn std::fmt::Display| Error::format(path, e.to_string());
    match PytorchReader::read_pickle_data(path, None).map_err(|e| format(&e))? {
        PickleValue::Dict(entries) => {
            let mut keys: Vec<_> = entries.keys().collect();
            keys.sort();
            for key in keys {
                match &entries[key] {
                    PickleValue::Unsupported(kind) if kind == "torch.Tensor" => {}
                    other => {
                        return Err(Error::format(
                            path,
                            format!(
                                "entry `{key}` is {}, not a tensor; only tensor archives are read",
                                describe(other)
                            ),
                        ));
                    }
                }
            }
        }
        other => {
            return Err(Error::format(
                path,
                format!(
                    "the archive holds {}, not a dictionary of tensors",
                    describe(&other)
                ),
            ));
        }
    }
    let reader = PytorchReader::new(path).map_err(|e| format(&e))?;
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

/// A pickled value's kind, for error messages.
fn describe(value: &PickleValue) -> String {
    match value {
        PickleValue::None => "None".into(),
        PickleValue::Bool(_) => "a bool".into(),
        PickleValue::Int(_) => "an int".into(),
        PickleValue::Float(_) => "a float".into(),
        PickleValue::String(_) => "a string".into(),
        PickleValue::List(_) => "a list".into(),
        PickleValue::Dict(_) => "a dictionary".into(),
        PickleValue::Bytes(_) => "bytes".into(),
        PickleValue::Unsupported(kind) => format!("a `{kind}` object"),
    }
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
pub(crate) fn safetensors_bytes(tensors: &TensorMap) -> Result<Vec<u8>> {
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(
        tensors.iter().map(|(k, t)| (k.as_str(), F32View(t))),
        Some(metadata),
    )
    .map_err(|e| Error::format("<memory>", e.to_string()))
}

/// Writes `files` (name, bytes) into `dir` so that a reader never sees a partial adapter.
///
/// Each file is written to a temporary in the same directory, synced, and renamed into place, so
/// every file a reader opens is whole. The last file is the one that makes the directory loadable
/// (the config), and configs record the checksum of the weights saved with them: a reader that
/// meets the new weights beside the old config notices, and reads again (see
/// `read_consistently`).
pub(crate) fn write_atomically(dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<()> {
    // Temporaries are unique per process and call, so concurrent saves never share one.
    static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let save = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, bytes) in files {
        let target = dir.join(name);
        let temp = dir.join(format!(".{name}.tmp-{}-{save}", std::process::id()));
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
