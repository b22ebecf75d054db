//! Shared helpers for the integration tests: fixtures and comparisons.
#![allow(dead_code)]

pub mod decoder;
pub mod families;
pub mod one_site;
pub mod snapshot;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_adapters::models::bert::{BertInput, BertModel};

#[cfg(feature = "flex")]
pub fn device() -> Device {
    Device::flex()
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Reads one tensor of a safetensors file as (shape, f64 values).
pub fn read_tensor(path: &Path, key: &str) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = file
        .tensor(key)
        .unwrap_or_else(|e| panic!("{}: {key}: {e}", path.display()));
    let data = view.data();
    let values = match view.dtype() {
        safetensors::Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        safetensors::Dtype::I64 => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("unexpected dtype {other:?}"),
    };
    (view.shape().to_vec(), values)
}

pub fn int_tensor(path: &Path, key: &str, device: &Device) -> Tensor<2, Int> {
    let (shape, values) = read_tensor(path, key);
    let values: Vec<i64> = values.into_iter().map(|v| v as i64).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// The fixture inputs (ids, mask) from a safetensors file.
pub fn inputs(path: &Path, device: &Device) -> BertInput {
    BertInput {
        input_ids: int_tensor(path, "input_ids", device),
        attention_mask: Some(int_tensor(path, "attention_mask", device)),
        token_type_ids: None,
    }
}

pub fn fixture_inputs(device: &Device) -> BertInput {
    inputs(&fixtures().join("inputs.safetensors"), device)
}

/// The fixture cases below `tests/fixtures/<group>`, sorted: exactly the cases the generator
/// listed in `<group>/cases.json` (a missing or an extra directory fails), so a loop over them
/// runs every case or fails.
pub fn case_dirs(group: &str) -> Vec<PathBuf> {
    let root = fixtures().join(group);
    let listed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("cases.json")).unwrap()).unwrap();
    let mut want: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|case| case["name"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let found: Vec<String> = dirs
        .iter()
        .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        found, want,
        "tests/fixtures/{group} differs from its cases.json"
    );
    assert!(!dirs.is_empty(), "tests/fixtures/{group} has no cases");
    dirs
}

/// A copy of fixture directory `rel` (below `tests/fixtures`) in a new temporary directory, which
/// is returned with the copy's path.
pub fn copy_fixture(rel: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(Path::new(rel).file_name().unwrap());
    copy_into(&fixtures().join(rel), &dir);
    (tmp, dir)
}

fn copy_into(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_into(&path, &target);
        } else {
            std::fs::copy(&path, target).unwrap();
        }
    }
}

pub fn base_model(device: &Device) -> BertModel {
    BertModel::from_pretrained(fixtures().join("base"), device).expect("fixture base model loads")
}

pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// The values widened to f64, as [`max_abs_diff`] compares them.
pub fn as_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| f64::from(*x)).collect()
}

/// max |a - b| over two equally long slices; panics on a non-finite value on either side, so
/// that a comparison can never pass because NaN dropped out of a `max`.
pub fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    if let Some(i) = a.iter().position(|x| !x.is_finite()) {
        panic!(
            "non-finite value {} at index {i} of the computed output",
            a[i]
        );
    }
    if let Some(i) = b.iter().position(|y| !y.is_finite()) {
        panic!(
            "non-finite value {} at index {i} of the expected output",
            b[i]
        );
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}

/// max |a - b| of two tensors of the same shape, failing on non-finite values (see
/// [`max_abs_diff`]).
pub fn max_abs_diff_tensors<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    max_abs_diff(&values(a), &as_f64(&values(b)))
}

/// Writes one f32 tensor `key` of `shape` to the safetensors file `path` (what the Python checks
/// compare with).
pub fn write_f32(path: &Path, key: &str, values: &[f32], shape: &[usize]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &bytes)
            .unwrap();
    safetensors::serialize_to_file([(key, view)], None, path).unwrap();
}

/// Every config spec is refused with `Error::InvalidConfig` naming its field.
pub fn configs_refused_naming_the_field(cases: &[(&str, &str)]) {
    for (spec, field) in cases {
        let err = burn_adapters::AdapterConfig::load(spec).unwrap_err();
        assert!(
            matches!(&err, burn_adapters::Error::InvalidConfig { field: f, .. } if f == field),
            "{spec}: {err}"
        );
    }
}

/// Rewrites a safetensors file of f32 tensors after `edit` changed its (key, shape, bytes) list.
pub fn edit_safetensors(path: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(k, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data);
            (k.clone(), view.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Rewrites one f32 tensor of a safetensors file after `edit` changed its values.
pub fn edit_tensor(path: &Path, key: &str, edit: impl FnOnce(&mut Vec<f32>)) {
    edit_safetensors(path, |tensors| {
        let (_, _, data) = tensors.iter_mut().find(|(k, _, _)| k == key).unwrap();
        let mut values: Vec<f32> = data
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        edit(&mut values);
        *data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    });
}
