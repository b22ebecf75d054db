//! Damaged files, systematically: every weights format cut at each of its section boundaries,
//! every config cut at every byte, duplicated and oversized headers, non-finite values and
//! wrong dtypes. Each load fails with a typed error naming the file, and leaves the model as it
//! was (every tensor compared).

mod common;

use std::path::{Path, PathBuf};

use burn_adapters::models::bert::BertModel;
use burn_adapters::prelude::*;
use common::snapshot::ModelState;
use common::*;

/// A temporary copy of fixture directory `fixture`, the path of its `file` there, the directory
/// holding that file, and the file's bytes.
fn fixture_file(fixture: &str, file: &str) -> (tempfile::TempDir, PathBuf, PathBuf, Vec<u8>) {
    let (tmp, root) = copy_fixture(fixture);
    let path = root.join(file);
    let dir = path.parent().unwrap().to_path_buf();
    let bytes = std::fs::read(&path).unwrap();
    (tmp, path, dir, bytes)
}

/// How a fixture is loaded into a model that already holds other adapters.
#[derive(Clone, Copy)]
enum Load {
    Adapter,
    Peft,
    /// A fusion over the adapters `a` and `b` beside it.
    Fusion,
}

/// A model with an active adapter (and, for fusions, the fused adapters).
fn model_for(load: Load, dir: &Path) -> BertModel {
    let mut model = base_model(&device());
    model
        .load_adapter(fixtures().join("bn/double_seq_bn"))
        .unwrap();
    if let Load::Fusion = load {
        model.load_adapter(dir.join("../a")).unwrap();
        model.load_adapter(dir.join("../b")).unwrap();
    }
    model.set_active_adapters("double_seq_bn").unwrap();
    model
}

fn run(load: Load, model: &mut BertModel, dir: &Path) -> Result<()> {
    match load {
        Load::Adapter => model.load_adapter(dir).map(drop),
        Load::Peft => model.load_peft_adapter(dir, "peft"),
        Load::Fusion => model.load_adapter_fusion(dir).map(drop),
    }
}

/// Loads `dir`, expects an error, checks the model is unchanged, returns the error.
fn load_fails(load: Load, dir: &Path) -> Error {
    let mut model = model_for(load, dir);
    let before = ModelState::of(&model);
    let err = match run(load, &mut model, dir) {
        Ok(()) => panic!("loading {} succeeded", dir.display()),
        Err(err) => err,
    };
    before.assert_unchanged(&ModelState::of(&model), &err);
    err
}

fn names_file(err: &Error, file: &Path) -> bool {
    match err {
        Error::Format { path, .. }
        | Error::Io { path, .. }
        | Error::Json { path, .. }
        | Error::MissingTensor { path, .. }
        | Error::UnexpectedTensor { path, .. }
        | Error::ShapeMismatch { path, .. } => path == file,
        _ => false,
    }
}

/// The safetensors weights of the fixtures, with how they are loaded.
const SAFETENSORS: [(&str, &str, Load); 4] = [
    ("bn/seq_bn", "adapter.safetensors", Load::Adapter),
    ("lora/lora_qkv_ffn", "adapter.safetensors", Load::Adapter),
    ("peft/peft_lora_qv", "adapter_model.safetensors", Load::Peft),
    (
        "composition/fuse_dynamic",
        "fusion/model_adapter_fusion.safetensors",
        Load::Fusion,
    ),
];

/// Where a safetensors file's sections begin and end: the length prefix, the JSON header, and
/// each tensor's bytes; plus a cut inside each.
fn safetensors_boundaries(bytes: &[u8]) -> Vec<usize> {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let mut cuts = vec![
        0,
        4,
        8,
        8 + header_len / 2,
        8 + header_len - 1,
        8 + header_len,
    ];
    for (key, info) in header.as_object().unwrap() {
        if key == "__metadata__" {
            continue;
        }
        let offsets = info["data_offsets"].as_array().unwrap();
        let [begin, end] = [0, 1].map(|i| 8 + header_len + offsets[i].as_u64().unwrap() as usize);
        cuts.extend([begin, (begin + end) / 2, end]);
    }
    cuts.retain(|&c| c < bytes.len());
    cuts.sort();
    cuts.dedup();
    cuts
}

#[test]
fn safetensors_cut_at_every_section_boundary() {
    let mut cases = 0;
    for (fixture, file, load) in SAFETENSORS {
        let (_tmp, path, dir, original) = fixture_file(fixture, file);
        for cut in safetensors_boundaries(&original) {
            std::fs::write(&path, &original[..cut]).unwrap();
            let err = load_fails(load, &dir);
            assert!(
                matches!(&err, Error::Format { path: p, .. } if p == &path),
                "{fixture}, cut at {cut}: {err}"
            );
            cases += 1;
        }
        std::fs::write(&path, &original).unwrap();
    }
    eprintln!("safetensors cuts: {cases}");
    assert!(cases >= 100, "{cases}");
}

/// Offsets of the zip records of a PyTorch archive: local headers, the entries' data, the
/// central directory and its end.
fn zip_boundaries(bytes: &[u8]) -> Vec<usize> {
    let mut cuts = Vec::new();
    for i in 0..bytes.len().saturating_sub(4) {
        match &bytes[i..i + 4] {
            b"PK\x03\x04" => {
                let name = u16::from_le_bytes([bytes[i + 26], bytes[i + 27]]) as usize;
                let extra = u16::from_le_bytes([bytes[i + 28], bytes[i + 29]]) as usize;
                let size = u32::from_le_bytes(bytes[i + 18..i + 22].try_into().unwrap()) as usize;
                let data = i + 30 + name + extra;
                cuts.extend([i, i + 15, data, data + size / 2]);
            }
            b"PK\x01\x02" | b"PK\x05\x06" | b"PK\x06\x06" | b"PK\x06\x07" => {
                cuts.extend([i, i + 10])
            }
            _ => {}
        }
    }
    cuts.push(bytes.len() - 1);
    cuts.retain(|&c| c < bytes.len());
    cuts.sort();
    cuts.dedup();
    cuts
}

#[test]
fn pytorch_archives_cut_at_every_record() {
    let mut cases = 0;
    for file in ["pytorch_adapter.bin", "pytorch_model_head.bin"] {
        let (_tmp, dir) = copy_fixture("bin/seq_bn_head");
        let path = dir.join(file);
        let original = std::fs::read(&path).unwrap();
        for cut in zip_boundaries(&original) {
            std::fs::write(&path, &original[..cut]).unwrap();
            // the head comes with the adapter only into a model with heads of that name
            let mut model = model_for(Load::Adapter, &dir);
            let before = ModelState::of(&model);
            let err = model
                .load_adapter(&dir)
                .expect_err("a cut archive must fail");
            assert!(
                matches!(&err, Error::Format { path: p, .. } if p == &path),
                "{file}, cut at {cut}: {err}"
            );
            before.assert_unchanged(&ModelState::of(&model), &err);
            cases += 1;
        }
    }
    eprintln!("archive cuts: {cases}");
    assert!(cases >= 100, "{cases}");
}

#[test]
fn configs_cut_at_every_byte() {
    let mut cases = 0;
    let configs = [
        ("bn/seq_bn", "adapter_config.json", Load::Adapter),
        ("bin/seq_bn_head", "head_config.json", Load::Adapter),
        ("peft/peft_lora_qv", "adapter_config.json", Load::Peft),
        (
            "composition/fuse_dynamic",
            "fusion/adapter_fusion_config.json",
            Load::Fusion,
        ),
    ];
    for (fixture, file, load) in configs {
        let (_tmp, path, dir, original) = fixture_file(fixture, file);
        let original = String::from_utf8(original).unwrap();
        for cut in (0..original.len()).filter(|&c| original.is_char_boundary(c)) {
            let text = &original[..cut];
            if text.trim_end() == original.trim_end() {
                continue; // only trailing whitespace cut: still the whole file
            }
            std::fs::write(&path, text).unwrap();
            let err = load_fails(load, &dir);
            assert!(
                matches!(&err, Error::Json { path: p, .. } if p == &path),
                "{file}, cut at {cut}: {err}"
            );
            cases += 1;
        }
    }
    eprintln!("config cuts: {cases}");
    assert!(cases >= 1000, "{cases}");
}

/// A safetensors file from a raw JSON header and data.
fn safetensors_with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn duplicated_oversized_and_empty_headers() {
    let (_tmp, dir) = copy_fixture("bn/seq_bn");
    let path = dir.join("adapter.safetensors");
    let original = std::fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&original[8..8 + header_len]).unwrap();
    let data = &original[8 + header_len..];
    let first_entry = {
        // `"key":{...}` of the first tensor, to repeat it
        let json: serde_json::Value = serde_json::from_str(header).unwrap();
        let (key, info) = json
            .as_object()
            .unwrap()
            .iter()
            .find(|(k, _)| *k != "__metadata__")
            .unwrap();
        format!("{}:{}", serde_json::to_string(key).unwrap(), info)
    };
    let duplicated = format!("{{{first_entry},{}", &header[1..]);
    let mut bad: Vec<(&str, Vec<u8>)> = vec![
        ("duplicated key", safetensors_with_header(&duplicated, data)),
        ("empty file", Vec::new()),
        ("empty header", safetensors_with_header("", data)),
        ("header `{}` with data", safetensors_with_header("{}", data)),
        ("header not an object", safetensors_with_header("[]", data)),
        (
            "header with padding only",
            safetensors_with_header("        ", data),
        ),
    ];
    for claimed in [
        header_len as u64 + data.len() as u64 + 1,
        200 << 20,
        u64::MAX,
    ] {
        let mut bytes = original.clone();
        bytes[..8].copy_from_slice(&claimed.to_le_bytes());
        bad.push(("oversized header length", bytes));
    }
    let mut cases = 0;
    for (what, bytes) in bad {
        std::fs::write(&path, &bytes).unwrap();
        let err = load_fails(Load::Adapter, &dir);
        assert!(
            matches!(&err, Error::Format { path: p, .. } if p == &path)
                || matches!(&err, Error::MissingTensor { path: p, .. } if p == &path),
            "{what}: {err}"
        );
        cases += 1;
    }
    // an archive listing the same entry twice (`data/1` renamed to `data/0`)
    let (_tmp, bin_dir) = copy_fixture("bin/ln_before");
    let bin = bin_dir.join("pytorch_adapter.bin");
    let mut bytes = std::fs::read(&bin).unwrap();
    let mut renamed = 0;
    for i in 0..bytes.len() - 7 {
        if &bytes[i..i + 7] == b"/data/1" && !bytes[i + 7].is_ascii_digit() {
            bytes[i + 6] = b'0';
            renamed += 1;
        }
    }
    assert_eq!(renamed, 2, "the local and the central record");
    std::fs::write(&bin, &bytes).unwrap();
    let err = load_fails(Load::Adapter, &bin_dir);
    assert!(names_file(&err, &bin), "duplicated entry: {err}");
    cases += 1;
    eprintln!("header cases: {cases}");
    assert_eq!(cases, 10);
}

/// `bytes` of a safetensors file with the first value of tensor `key` replaced.
fn with_first_value(bytes: &[u8], key: &str, value: [u8; 4]) -> Vec<u8> {
    let file = safetensors::SafeTensors::deserialize(bytes).unwrap();
    let view = file.tensor(key).unwrap();
    let start = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
    let mut out = bytes.to_vec();
    out[start..start + 4].copy_from_slice(&value);
    out
}

#[test]
fn non_finite_values_and_wrong_dtypes_name_the_tensor() {
    let mut cases = 0;
    for (fixture, file, load) in SAFETENSORS {
        let (_tmp, path, dir, original) = fixture_file(fixture, file);
        let key = {
            let st = safetensors::SafeTensors::deserialize(&original).unwrap();
            let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
            names.sort();
            names[0].clone()
        };
        for value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            std::fs::write(
                &path,
                with_first_value(&original, &key, value.to_le_bytes()),
            )
            .unwrap();
            let err = load_fails(load, &dir);
            assert!(
                matches!(&err, Error::Format { path: p, reason } if p == &path && reason.contains(key.trim_start_matches("base_model.model."))),
                "{fixture} {value}: {err}"
            );
            cases += 1;
        }
        // the same bytes declared as integers
        let header_len = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&original[8..8 + header_len]).unwrap();
        let as_int = header.replacen("\"F32\"", "\"I32\"", 1);
        std::fs::write(
            &path,
            safetensors_with_header(&as_int, &original[8 + header_len..]),
        )
        .unwrap();
        let err = load_fails(load, &dir);
        assert!(
            matches!(&err, Error::Format { path: p, reason } if p == &path && reason.contains("dtype")),
            "{fixture} as I32: {err}"
        );
        cases += 1;
    }
    eprintln!("value cases: {cases}");
    assert_eq!(cases, 16);
}

#[test]
fn pytorch_archives_with_anything_but_tensors_are_refused_unexecuted() {
    // Unpickled by Python, `system_call` and `eval_call` create this file in the working
    // directory (see tools/gen_fixtures_hostile.py).
    let marker = Path::new(env!("CARGO_MANIFEST_DIR")).join("burn_adapters_pwned");
    let _ = std::fs::remove_file(&marker);
    let cases = [
        ("system_call", "posix.system"),
        ("eval_call", "eval`"),
        ("int_entry", "an int"),
        ("nested_dict", "a dictionary"),
    ];
    for (case, kind) in cases {
        let dir = fixtures().join("hostile").join(case);
        let bin = dir.join("pytorch_adapter.bin");
        let err = load_fails(Load::Adapter, &dir);
        assert!(
            matches!(&err, Error::Format { path, reason } if path == &bin && reason.contains("`extra`") && reason.contains(kind)),
            "{case}: {err}"
        );
        assert!(!marker.exists(), "{case}: the pickle was executed");
    }
}
