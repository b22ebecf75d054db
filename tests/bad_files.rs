//! Bad adapter files: each kind gives a typed error naming the file and key, and the model is
//! unchanged after every failed load.

mod common;

use std::path::{Path, PathBuf};

use burn_adapters::models::bert::BertModel;
use burn_adapters::prelude::*;
use common::snapshot::ModelState;
use common::*;
use serde_json::Value;

/// A copy of bottleneck fixture `case` in a temporary directory.
fn copy_case(case: &str) -> (tempfile::TempDir, PathBuf) {
    copy_fixture(&format!("bn/{case}"))
}

/// A model with one adapter already active, to check that failed loads change nothing.
fn model() -> BertModel {
    let mut model = base_model(&device());
    model
        .load_adapter(fixtures().join("bn/double_seq_bn"))
        .unwrap();
    model.set_active_adapters("double_seq_bn").unwrap();
    model
}

/// Loads `dir` into a model, expects an error, checks the model is unchanged, returns the error.
fn load_fails(dir: &Path) -> Error {
    let mut model = model();
    let before = ModelState::of(&model);
    let err = model.load_adapter(dir).expect_err("the load must fail");
    before.assert_unchanged(&ModelState::of(&model), &err);
    err
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("adapter_config.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
}

/// Rewrites `adapter.safetensors` after editing its tensors.
fn edit_weights(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>)) {
    edit_safetensors(&dir.join("adapter.safetensors"), edit);
}

const UP: &str = "encoder.layer.1.output.adapters.seq_bn.adapter_up.weight";

#[test]
fn missing_directory_config_and_weights() {
    let err = load_fails(Path::new("/nonexistent/adapter"));
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("adapter_config.json")),
        "{err}"
    );

    let (_tmp, dir) = copy_case("seq_bn");
    std::fs::remove_file(dir.join("adapter.safetensors")).unwrap();
    let err = load_fails(&dir);
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("adapter.safetensors")),
        "{err}"
    );
}

#[test]
fn truncated_and_corrupt_safetensors() {
    let original = std::fs::read(fixtures().join("bn/seq_bn/adapter.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(original[..8].try_into().unwrap()) as usize;
    let cuts = [
        0,
        4,
        8,
        9,
        8 + header_len / 2,
        8 + header_len,
        8 + header_len + 10,
        original.len() - 1,
    ];
    for cut in cuts {
        let (_tmp, dir) = copy_case("seq_bn");
        std::fs::write(dir.join("adapter.safetensors"), &original[..cut]).unwrap();
        let err = load_fails(&dir);
        assert!(
            matches!(&err, Error::Format { path, .. } if path.ends_with("adapter.safetensors")),
            "cut at {cut}: {err}"
        );
    }
    // a header that is not JSON, and a header length larger than the file
    let (_tmp, dir) = copy_case("seq_bn");
    let mut garbage = original.clone();
    garbage[8..8 + 10].copy_from_slice(b"!!!!!!!!!!");
    std::fs::write(dir.join("adapter.safetensors"), &garbage).unwrap();
    assert!(matches!(load_fails(&dir), Error::Format { .. }));
    let mut huge = original.clone();
    huge[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(dir.join("adapter.safetensors"), &huge).unwrap();
    assert!(matches!(load_fails(&dir), Error::Format { .. }));
}

#[test]
fn pytorch_bin_must_be_a_plain_tensor_archive() {
    let (tmp, dir) = copy_case("seq_bn");
    std::fs::remove_file(dir.join("adapter.safetensors")).unwrap();
    let bin = dir.join("pytorch_adapter.bin");
    // not an archive at all
    std::fs::write(&bin, b"definitely not a torch file").unwrap();
    assert!(matches!(load_fails(&dir), Error::Format { path, .. } if path == bin));
    // a pickle that would run a shell command if it were unpickled by Python
    let marker = tmp.path().join("pwned");
    let payload = format!("cos\nsystem\n(S'touch {}'\ntR.", marker.display());
    std::fs::write(&bin, payload.as_bytes()).unwrap();
    let err = load_fails(&dir);
    assert!(matches!(&err, Error::Format { .. }), "{err}");
    assert!(!marker.exists(), "the pickle was executed");
}

#[test]
fn config_problems_name_the_field() {
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "hidden size",
            Box::new(|j| j["hidden_size"] = 768.into()),
            "hidden_size",
        ),
        (
            "architecture",
            Box::new(|j| j["config"]["architecture"] = "quantum".into()),
            "config.architecture",
        ),
        (
            "reduction factor",
            Box::new(|j| j["config"]["reduction_factor"] = (-1).into()),
            "config.reduction_factor",
        ),
        (
            "non-linearity",
            Box::new(|j| j["config"]["non_linearity"] = "wiggle".into()),
            "config.non_linearity",
        ),
        (
            "scaling",
            Box::new(|j| j["config"]["scaling"] = "often".into()),
            "config.scaling",
        ),
        (
            "no config",
            Box::new(|j| {
                j.as_object_mut()
                    .unwrap()
                    .remove("config")
                    .map(drop)
                    .unwrap()
            }),
            "config",
        ),
        (
            "no name",
            Box::new(|j| j.as_object_mut().unwrap().remove("name").map(drop).unwrap()),
            "name",
        ),
    ];
    for (what, edit, field) in cases {
        let (_tmp, dir) = copy_case("seq_bn");
        edit_config(&dir, edit);
        let err = load_fails(&dir);
        let message = err.to_string();
        let names_field = match &err {
            Error::Json { field: f, path, .. } => {
                f == field && path.ends_with("adapter_config.json")
            }
            Error::HiddenSizeMismatch {
                path,
                expected: 32,
                found: 768,
            } => field == "hidden_size" && path.ends_with("adapter_config.json"),
            _ => false,
        };
        assert!(names_field, "{what}: {message}");
    }
    let (_tmp, dir) = copy_case("seq_bn");
    std::fs::write(dir.join("adapter_config.json"), "{ not json").unwrap();
    assert!(matches!(load_fails(&dir), Error::Json { .. }));
}

#[test]
fn wrong_missing_unexpected_and_non_finite_tensors() {
    let (_tmp, dir) = copy_case("seq_bn");
    edit_weights(&dir, |t| {
        let up = t.iter_mut().find(|(k, ..)| k == UP).unwrap();
        up.1 = vec![32, 2];
        up.2.truncate(32 * 2 * 4);
    });
    let err = load_fails(&dir);
    assert!(
        matches!(&err, Error::ShapeMismatch { key, expected, found, .. } if key == UP && expected == &[32, 4] && found == &[32, 2]),
        "{err}"
    );

    let (_tmp, dir) = copy_case("seq_bn");
    edit_weights(&dir, |t| t.retain(|(k, ..)| k != UP));
    assert!(matches!(load_fails(&dir), Error::MissingTensor { key, .. } if key == UP));

    let (_tmp, dir) = copy_case("seq_bn");
    edit_weights(&dir, |t| {
        t.push((
            "encoder.layer.0.output.adapters.seq_bn.extra".into(),
            vec![1],
            vec![0; 4],
        ))
    });
    assert!(
        matches!(load_fails(&dir), Error::UnexpectedTensor { key, .. } if key.ends_with(".extra"))
    );

    let (_tmp, dir) = copy_case("seq_bn");
    edit_weights(&dir, |t| {
        let up = t.iter_mut().find(|(k, ..)| k == UP).unwrap();
        up.2[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    assert!(matches!(load_fails(&dir), Error::Format { reason, .. } if reason.contains(UP)));
}

#[test]
fn prefixed_keys_legacy_gelu_and_renaming() {
    // `bert.`-prefixed keys (saved from a model with heads) load
    let (_tmp, dir) = copy_case("seq_bn");
    edit_weights(&dir, |t| {
        t.iter_mut().for_each(|(k, ..)| *k = format!("bert.{k}"))
    });
    let mut model = base_model(&device());
    model.load_adapter(&dir).unwrap();

    // duplicate name → typed error, model unchanged; load_adapter_as works
    let err = {
        let before = ModelState::of(&model);
        let err = model
            .load_adapter(fixtures().join("bn/seq_bn"))
            .unwrap_err();
        before.assert_unchanged(&ModelState::of(&model), &err);
        err
    };
    assert!(matches!(err, Error::DuplicateAdapter(n) if n == "seq_bn"));
    assert_eq!(
        model
            .load_adapter_as(fixtures().join("bn/seq_bn"), "copy")
            .unwrap(),
        "copy"
    );
    assert!(matches!(
        model.load_adapter_as(fixtures().join("bn/seq_bn"), "bad.name"),
        Err(Error::InvalidName { .. })
    ));

    // a config without `version` is legacy: its "gelu" is the tanh approximation
    let (_tmp, dir) = copy_case("seq_bn_gelu");
    edit_config(&dir, |j| {
        j.as_object_mut().unwrap().remove("version");
    });
    let mut legacy = base_model(&device());
    legacy.load_adapter(&dir).unwrap();
    let bn = legacy
        .adapter_config("seq_bn_gelu")
        .unwrap()
        .bottleneck()
        .unwrap();
    assert_eq!(bn.non_linearity, burn_adapters::config::Activation::GeluNew);
}

#[test]
fn saves_are_atomic_and_leave_no_temporaries() {
    let mut model = base_model(&device());
    model.load_adapter(fixtures().join("bn/seq_bn")).unwrap();
    model
        .load_adapter(fixtures().join("bn/double_seq_bn"))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // a target below a regular file cannot be created: error, nothing written
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        model.save_adapter(file.join("a"), "seq_bn"),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        model.save_adapter(tmp.path().join("x"), "nope"),
        Err(Error::UnknownAdapter(_))
    ));
    assert!(!tmp.path().join("x").exists());

    // overwriting one adapter's directory with another's leaves a consistent adapter
    let dir = tmp.path().join("slot");
    model.save_adapter(&dir, "seq_bn").unwrap();
    model.save_adapter(&dir, "double_seq_bn").unwrap();
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["adapter.safetensors", "adapter_config.json"]);
    let mut fresh = base_model(&device());
    assert_eq!(fresh.load_adapter(&dir).unwrap(), "double_seq_bn");

    // all adapters at once, and back
    let all = tmp.path().join("all");
    model.save_all_adapters(&all).unwrap();
    let mut fresh = base_model(&device());
    assert_eq!(
        fresh.load_all_adapters(&all).unwrap(),
        ["double_seq_bn", "seq_bn"]
    );
    // all or nothing: a corrupt member leaves the model unchanged
    std::fs::write(all.join("seq_bn/adapter.safetensors"), b"oops").unwrap();
    let mut fresh = base_model(&device());
    assert!(fresh.load_all_adapters(&all).is_err());
    assert!(fresh.adapter_names().is_empty());
}

#[test]
fn weights_from_another_save_are_detected_by_checksum() {
    let mut model = base_model(&device());
    model.load_adapter(fixtures().join("bn/seq_bn")).unwrap();
    model
        .load_adapter_as(fixtures().join("bn/seq_bn_relu"), "other")
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    model.save_adapter(&a, "seq_bn").unwrap();
    model.save_adapter(&b, "other").unwrap();
    // a hand-edited config still loads: the checksum covers the weights
    edit_config(&a, |j| j["model_name"] = "hand-edited".into());
    let mut fresh = base_model(&device());
    assert_eq!(fresh.load_adapter(&a).unwrap(), "seq_bn");
    // the other save's weights (same shapes) beside this config: refused, naming both files
    std::fs::copy(b.join("adapter.safetensors"), a.join("adapter.safetensors")).unwrap();
    let err = load_fails(&a);
    assert!(
        matches!(&err, Error::ChecksumMismatch { config, weights }
            if config.ends_with("a/adapter_config.json") && weights.ends_with("a/adapter.safetensors")),
        "{err}"
    );
    // without a recorded checksum (as AdapterHub writes) the tensors are matched as they are:
    // here their keys name the other adapter
    edit_config(&a, |j| {
        j.as_object_mut().unwrap().remove("weights_crc32");
    });
    assert!(matches!(load_fails(&a), Error::MissingTensor { .. }));
}
