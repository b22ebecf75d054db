//! Hugging Face PEFT LoRA import and export, against fixtures made by the `peft` library.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use burn_adapters::prelude::*;
use common::snapshot::snapshot;
use common::*;

const TOLERANCE: f64 = 1e-5;

fn peft_case(name: &str) -> PathBuf {
    fixtures().join("peft").join(name)
}

fn flat2(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec().unwrap()
}

#[test]
fn peft_saved_loras_match_peft_outputs() {
    let device = device();
    let base = base_model(&device);
    for case in ["peft_lora_qv", "peft_lora_rslora", "peft_dora_qv"] {
        let dir = peft_case(case);
        let mut model = base.clone();
        model
            .load_peft_adapter(&dir, "p")
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        model.set_active_adapters("p").unwrap();
        let out = model.forward(fixture_inputs(&device));
        let expected = dir.join("expected.safetensors");
        let hidden = max_abs_diff(
            &values(out.last_hidden_state),
            &read_tensor(&expected, "last_hidden_state").1,
        );
        let pooled = max_abs_diff(
            &flat2(out.pooler_output.unwrap()),
            &read_tensor(&expected, "pooler_output").1,
        );
        println!("{case:<18} max |Δ| hidden {hidden:.2e}, pooler {pooled:.2e}");
        assert!(hidden <= TOLERANCE && pooled <= TOLERANCE, "{case}");
    }
    // rsLoRA's lora_alpha/√r is kept as such.
    let mut model = base.clone();
    model
        .load_peft_adapter(peft_case("peft_lora_rslora"), "p")
        .unwrap();
    let lora = model.adapter_config("p").unwrap().lora().unwrap().clone();
    assert_eq!((lora.r, lora.alpha, lora.use_rslora), (4, 8.0, true));
    assert_eq!(lora.scaling(), 8.0 / 2.0);
}

#[test]
fn peft_loras_outside_adapterhubs_locations_are_refused_untouched() {
    // target_modules "dense" also wraps pooler.dense, which has no linear site.
    let device = device();
    let mut model = base_model(&device);
    let before = snapshot(&model);
    let err = model
        .load_peft_adapter(peft_case("peft_lora_all"), "p")
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(err.to_string().contains(".dense"), "{err}");
    assert_eq!(snapshot(&model), before);
    assert!(model.adapter_names().is_empty());
}

fn rewrite_config(from: &Path, to: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::copy(
        from.join("adapter_model.safetensors"),
        to.join("adapter_model.safetensors"),
    )
    .unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from.join("adapter_config.json")).unwrap())
            .unwrap();
    edit(&mut config);
    std::fs::write(
        to.join("adapter_config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
}

#[test]
fn bad_peft_configs_name_the_field() {
    let device = device();
    let mut model = base_model(&device);
    let scratch = tempfile::tempdir().unwrap();
    let source = peft_case("peft_lora_qv");
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        // an IA3 config beside LoRA tensors: the first missing vector is named
        ("ia3", Box::new(|c| c["peft_type"] = "IA3".into()), "ia3_l"),
        (
            "adalora",
            Box::new(|c| c["peft_type"] = "ADALORA".into()),
            "ADALORA",
        ),
        ("bias", Box::new(|c| c["bias"] = "all".into()), "bias"),
        // DoRA without the magnitude vectors: the first missing tensor is named
        (
            "dora",
            Box::new(|c| c["use_dora"] = true.into()),
            "lora_magnitude_vector",
        ),
        ("rank0", Box::new(|c| c["r"] = 0.into()), "r"),
        // PiSSA's and OLoRA's factors belong to the residual base their start left
        (
            "pissa",
            Box::new(|c| c["init_lora_weights"] = "pissa_niter_4".into()),
            "pissa_niter_4",
        ),
        (
            "olora",
            Box::new(|c| c["init_lora_weights"] = "olora".into()),
            "olora",
        ),
        (
            "init",
            Box::new(|c| c["init_lora_weights"] = "sideways".into()),
            "init_lora_weights",
        ),
        (
            "alpha",
            Box::new(|c| c["lora_alpha"] = "x".into()),
            "lora_alpha",
        ),
        (
            "pattern",
            Box::new(|c| c["rank_pattern"] = serde_json::json!({"query": 2})),
            "rank_pattern",
        ),
    ];
    for (label, edit, field) in cases {
        let dir = scratch.path().join(label);
        rewrite_config(&source, &dir, edit);
        let err = model.load_peft_adapter(&dir, "p").unwrap_err();
        assert!(err.to_string().contains(field), "{label}: {err}");
    }
    assert!(model.adapter_names().is_empty());
    // initialisations that leave the base alone load
    for (label, init) in [("gaussian", "gaussian".into()), ("no_init", false.into())] {
        let dir = scratch.path().join(label);
        rewrite_config(&source, &dir, |c| c["init_lora_weights"] = init);
        model.load_peft_adapter(&dir, label).unwrap();
    }
    // a rank that disagrees with the tensors is a shape error naming the key
    let dir = scratch.path().join("rank8");
    rewrite_config(&source, &dir, |c| c["r"] = 8.into());
    let err = model.load_peft_adapter(&dir, "p").unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
}

/// Export → PEFT import here is bit-exact; with `BURN_ADAPTERS_EXPORT_PEFT` set, the exports
/// and their outputs are written there for `tools/check_peft_import.py`.
#[test]
fn peft_export_round_trips_and_refuses_what_peft_cannot_hold() {
    let device = device();
    let base = base_model(&device);
    let export = std::env::var_os("BURN_ADAPTERS_EXPORT_PEFT").map(PathBuf::from);
    let scratch = tempfile::tempdir().unwrap();
    for case in ["lora_qv", "lora_qkv_ffn", "lora_leave_out"] {
        let mut model = base.clone();
        let name = model
            .load_adapter(fixtures().join("lora").join(case))
            .unwrap();
        model.set_active_adapters(name.as_str()).unwrap();
        let out = model.forward(fixture_inputs(&device));
        let (hidden, pooled) = (
            values(out.last_hidden_state),
            flat2(out.pooler_output.unwrap()),
        );
        let dir = export
            .clone()
            .unwrap_or_else(|| scratch.path().to_path_buf())
            .join(case);
        model.save_peft_adapter(&dir, &name).unwrap();
        let mut again = base.clone();
        again.load_peft_adapter(&dir, "again").unwrap();
        again.set_active_adapters("again").unwrap();
        assert_eq!(
            values(again.forward(fixture_inputs(&device)).last_hidden_state),
            hidden,
            "{case}"
        );
        if export.is_some() {
            write_outputs(&dir.join("expected.safetensors"), &hidden, &pooled);
        }
    }
    let mut model = base.clone();
    for case in ["lora_gating", "union_seq_bn_lora"] {
        let name = model
            .load_adapter(fixtures().join("lora").join(case))
            .unwrap();
        let err = model
            .save_peft_adapter(scratch.path().join("refused"), &name)
            .unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{case}: {err}");
    }
    assert!(!scratch.path().join("refused").exists());
}

fn write_outputs(path: &Path, hidden: &[f32], pooled: &[f32]) {
    let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let (h, p) = (bytes(hidden), bytes(pooled));
    fn view(shape: Vec<usize>, data: &[u8]) -> safetensors::tensor::TensorView<'_> {
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, data).unwrap()
    }
    safetensors::serialize_to_file(
        [
            ("last_hidden_state", view(vec![2, 7, 32], &h)),
            ("pooler_output", view(vec![2, 32], &p)),
        ],
        None,
        path,
    )
    .unwrap();
}
