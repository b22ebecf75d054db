//! PEFT's LoRA initialisations (`tools/gen_fixtures_lora_inits.py`): PiSSA and OLoRA start as
//! PEFT starts them on BERT and Llama, their saved form is the plain LoRA PEFT converts them to,
//! and removing or merging one restores the weights; Gaussian's statistics; bad combinations.

mod common;

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use burn_adapters::model::AverageStrategy;
use burn_adapters::models::bert::BertModel;
use burn_adapters::models::llama::LlamaModel;
use burn_adapters::prelude::*;
use burn_adapters::train::{Trainer, TrainingConfig};
use common::decoder::train_steps;
use common::families::{
    Family, deviation, export_dir, export_root, merge_computes_the_same_and_resets,
};
use common::snapshot::snapshot;
use common::*;

const TOLERANCE: f64 = 1e-5;

/// `(name, family, config string)` of the fixture's cases.
fn cases() -> Vec<(String, String, String)> {
    let path = fixtures().join("lora_inits/cases.json");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases: Vec<_> = cases
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let field = |key: &str| case[key].as_str().unwrap().to_string();
            (field("name"), field("family"), field("config"))
        })
        .collect();
    assert_eq!(cases.len(), 4);
    cases
}

fn case_dir(name: &str) -> PathBuf {
    fixtures().join("lora_inits").join(name)
}

/// Tensor `key` of a safetensors file as f32 rows `[rows, cols]`.
fn matrix(path: &Path, key: &str) -> Vec<Vec<f32>> {
    let (shape, values) = read_tensor(path, key);
    values
        .chunks(shape[1])
        .map(|row| row.iter().map(|v| *v as f32).collect())
        .collect()
}

/// max |Δ| between PEFT's start (`initial.safetensors`) and the `r` leading rows of `A` and
/// columns of `B` in a Rust-saved PEFT file of the untrained adapter (`[A₀ | A₀]`), each rank
/// taken with the sign that matches: singular and QR directions are defined up to one.
fn factor_deviation(initial: &Path, saved: &Path, module: &str) -> f64 {
    let key = |part: &str| format!("base_model.model.{module}.{part}.weight");
    let (want_a, want_b) = (
        matrix(initial, &format!("{module}.lora_A")),
        matrix(initial, &format!("{module}.lora_B")),
    );
    let (got_a, got_b) = (matrix(saved, &key("lora_A")), matrix(saved, &key("lora_B")));
    let mut worst = 0.0f64;
    for (rank, want_row) in want_a.iter().enumerate() {
        let dot: f32 = want_row.iter().zip(&got_a[rank]).map(|(w, g)| w * g).sum();
        let sign = dot.signum();
        let rows = want_row.iter().zip(&got_a[rank]);
        let columns = want_b.iter().zip(&got_b).map(|(w, g)| (&w[rank], &g[rank]));
        for (want, got) in rows.chain(columns) {
            worst = worst.max(f64::from((want - sign * got).abs()));
        }
    }
    worst
}

/// The wrapped modules named in PEFT's `initial.safetensors`.
fn modules(initial: &Path) -> Vec<String> {
    let bytes = std::fs::read(initial).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut modules: Vec<String> = file
        .names()
        .into_iter()
        .filter_map(|key| key.strip_suffix(".lora_A").map(str::to_string))
        .collect();
    modules.sort();
    modules
}

fn starts_as_peft<F: Family>(name: &str, config: &str, device: &Device) {
    let dir = case_dir(name);
    let mut model = F::base(device);
    let base = model.output(device);
    model
        .add_adapter("init", AdapterConfig::load(config).unwrap())
        .unwrap();
    model.set_active_adapters("init").unwrap();
    let start = dir.join("start.safetensors");
    let adapted = model.output(device);
    let d_base = max_abs_diff_tensors(adapted.clone(), base);
    let d_adapted = deviation::<F>(adapted, &start, "adapted", device);
    model.deactivate_adapters();
    let d_residual = deviation::<F>(model.output(device), &start, "residual", device);
    println!("{name}: vs base {d_base:.1e}, adapted {d_adapted:.1e}, residual {d_residual:.1e}");
    for d in [d_base, d_adapted, d_residual] {
        assert!(d <= TOLERANCE, "{name}: {d}");
    }
    let scratch = tempfile::tempdir().unwrap();
    model.save_peft_adapter(scratch.path(), "init").unwrap();
    let saved = scratch.path().join("adapter_model.safetensors");
    let initial = dir.join("initial.safetensors");
    for module in modules(&initial) {
        let d = factor_deviation(&initial, &saved, &module);
        assert!(d <= TOLERANCE, "{name} {module}: factors {d}");
    }
}

/// PiSSA (with rsLoRA and DoRA too) and OLoRA take the same factors out of the same weights as
/// PEFT: the adapted output is the base's, the residual's without the adapter is PEFT's, and
/// the factors are PEFT's up to each direction's sign.
#[test]
fn pissa_and_olora_start_as_peft() {
    let device = device();
    for (name, family, config) in cases() {
        match family.as_str() {
            "bert" => starts_as_peft::<BertModel>(&name, &config, &device),
            _ => starts_as_peft::<LlamaModel>(&name, &config, &device),
        }
    }
}

fn loads_converted<F: Family>(name: &str, device: &Device) {
    let converted = case_dir(name).join("converted");
    let mut model = F::base(device);
    model.load_peft_adapter(&converted, "converted").unwrap();
    model.set_active_adapters("converted").unwrap();
    let expected = converted.join("expected.safetensors");
    let d = deviation::<F>(model.output(device), &expected, F::OUTPUT, device);
    println!("{name} converted: max |Δ| {d:.1e}");
    assert!(d <= TOLERANCE, "{name}: {d}");
}

/// PEFT's conversion of trained PiSSA/OLoRA adapters (`path_initial_model_for_weight_conversion`)
/// loads on the original base with PEFT's trained outputs.
#[test]
fn peft_conversions_load_on_the_original_base() {
    let device = device();
    for (name, family, _) in cases() {
        match family.as_str() {
            "bert" => loads_converted::<BertModel>(&name, &device),
            _ => loads_converted::<LlamaModel>(&name, &device),
        }
    }
}

/// Saves adapter `name` of `model` with `save` into `out`, loads it on a fresh base with `load`
/// and compares outputs; writes `expected.safetensors` for the Python checkers.
fn saved_form_matches<F: Family>(
    model: &F,
    out: &Path,
    save: impl Fn(&F, &Path),
    load: impl Fn(&mut F, &Path),
    device: &Device,
) {
    save(model, out);
    let mut fresh = F::base(device);
    load(&mut fresh, out);
    fresh.set_active_adapters("trained").unwrap();
    let trained = model.output(device);
    let d = max_abs_diff_tensors(fresh.output(device), trained.clone());
    println!("{} {}: max |Δ| {d:.1e}", F::NAME, out.display());
    assert!(d <= TOLERANCE, "{}: {d}", out.display());
    let dims = trained.dims();
    write_f32(
        &out.join("expected.safetensors"),
        F::OUTPUT,
        &values(trained),
        &dims,
    );
}

fn saves_as_plain_lora<F: Family>(model: &F, root: &Path, adapterhub_root: &Path, case: &str) {
    let device = &model.devices()[0];
    let peft_out = match F::NAME {
        "bert" => root.join(case),
        family => root.join(family).join(case),
    };
    saved_form_matches(
        model,
        &peft_out,
        |m, dir| m.save_peft_adapter(dir, "trained").unwrap(),
        |m, dir| m.load_peft_adapter(dir, "trained").unwrap(),
        device,
    );
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(peft_out.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["init_lora_weights"], true);
    saved_form_matches(
        model,
        &export_dir::<F>(adapterhub_root).join(case),
        |m, dir| m.save_adapter(dir, "trained").unwrap(),
        |m, dir| {
            m.load_adapter(dir).unwrap();
        },
        device,
    );
}

/// Trained PiSSA/OLoRA adapters save (PEFT's and AdapterHub's formats) as the plain LoRA of
/// twice the rank that gives the trained model's outputs on the original base. Under
/// `BURN_ADAPTERS_EXPORT_PEFT` / `BURN_ADAPTERS_EXPORT_DECODER` / `BURN_ADAPTERS_EXPORT_LORA_INITS`
/// the files go there for the Python checkers.
#[test]
fn trained_pissa_and_olora_save_as_plain_loras_for_the_original_base() {
    let device = device().autodiff();
    let (_peft_scratch, peft_root) = export_root("BURN_ADAPTERS_EXPORT_PEFT");
    let (_decoder_scratch, decoder_root) = export_root("BURN_ADAPTERS_EXPORT_DECODER");
    let (_adapterhub_scratch, adapterhub_root) = export_root("BURN_ADAPTERS_EXPORT_LORA_INITS");

    let config = "lora[r=4,alpha=16,intermediate_lora=True,use_rslora=True,init_weights=olora]";
    let mut bert = BertModel::base(&device);
    bert.add_adapter("trained", AdapterConfig::load(config).unwrap())
        .unwrap();
    bert.train_adapter("trained").unwrap();
    let mut trainer = Trainer::new(&TrainingConfig::new().with_learning_rate(1e-2), 5);
    for _ in 0..5 {
        let loss = bert.output(&device).powi_scalar(2).mean();
        bert = trainer.step(bert, loss);
    }
    // Dropout off: the outputs compared are the inference model's.
    saves_as_plain_lora(&bert.valid(), &peft_root, &adapterhub_root, "olora_rslora");

    let config = "lora[r=4,alpha=8,use_dora=True,init_weights=pissa]";
    let mut llama = LlamaModel::base(&device);
    llama
        .add_adapter("trained", AdapterConfig::load(config).unwrap())
        .unwrap();
    llama.train_adapter("trained").unwrap();
    let (llama, losses) = train_steps(llama, LlamaModel::forward, &device);
    assert!(losses[19] < losses[0], "{losses:?}");
    saves_as_plain_lora(
        &llama.valid(),
        &decoder_root,
        &adapterhub_root,
        "pissa_dora",
    );
}

/// Removing a PiSSA/OLoRA adapter gives its start back to the weights, merging computes the
/// unmerged output and resetting restores the residual weights (within 1e-6), also with another
/// adapter merged while it is added and removed.
#[test]
fn removing_or_merging_restores_the_weights() {
    let device = device();
    let mut model = BertModel::base(&device);
    let original = snapshot(&model);
    model
        .add_adapter(
            "plain",
            AdapterConfig::load("lora[init_weights=bert]").unwrap(),
        )
        .unwrap();
    model.merge_adapter("plain").unwrap();
    let config = "lora[r=4,alpha=8,intermediate_lora=True,init_weights=pissa]";
    model
        .add_adapter("pissa", AdapterConfig::load(config).unwrap())
        .unwrap();
    model.reset_adapter();
    model.set_active_adapters("pissa").unwrap();
    merge_computes_the_same_and_resets(&mut model, "pissa", &device);
    model.delete_adapter("pissa").unwrap();
    model.delete_adapter("plain").unwrap();
    let restored = snapshot(&model);
    assert_eq!(
        original.keys().collect::<Vec<_>>(),
        restored.keys().collect::<Vec<_>>()
    );
    for (path, values) in &original {
        let d = max_abs_diff(&restored[path], &as_f64(values));
        assert!(d <= 1e-6, "{path}: {d}");
    }
}

/// `pissa_niter_N` approximates PiSSA's start by randomized subspace iteration: the output is
/// still the base's, and with enough iterations the start is PiSSA's.
#[test]
fn pissa_niter_approaches_pissa() {
    let device = device();
    let start = |init: &str| {
        let mut model = BertModel::base(&device);
        let config = format!("lora[r=2,alpha=4,init_weights={init},init_weights_seed=3]");
        model
            .add_adapter("p", AdapterConfig::load(&config).unwrap())
            .unwrap();
        model.set_active_adapters("p").unwrap();
        let base = BertModel::base(&device).output(&device);
        let d = max_abs_diff_tensors(model.output(&device), base);
        assert!(d <= TOLERANCE, "{init}: {d}");
        model.deactivate_adapters();
        model.output(&device)
    };
    let exact = start("pissa");
    let coarse = max_abs_diff_tensors(start("pissa_niter_0"), exact.clone());
    let fine = max_abs_diff_tensors(start("pissa_niter_300"), exact);
    println!("residual output vs PiSSA's: 0 iterations {coarse:.1e}, 300 iterations {fine:.1e}");
    assert!(fine < 1e-4 && fine < coarse / 100.0, "{coarse} {fine}");
}

/// PEFT's `"gaussian"`: `A` from N(0, 1/r) and `B` zeros; AdapterHub files name it `"lora"`
/// (AdapterHub does not know it), PEFT's keep the factors.
#[test]
fn gaussian_start_and_files() {
    let device = device();
    let mut model = BertModel::base(&device);
    let config = "lora[r=4,init_weights=gaussian,init_weights_seed=1]";
    model
        .add_adapter("g", AdapterConfig::load(config).unwrap())
        .unwrap();
    let params = snapshot(&model);
    let a: Vec<f32> = params
        .iter()
        .filter(|(path, _)| path.contains(".g.lora_a"))
        .flat_map(|(_, v)| v.clone())
        .collect();
    let b_zero = params
        .iter()
        .filter(|(path, _)| path.contains(".g.lora_b"))
        .all(|(_, v)| v.iter().all(|x| *x == 0.0));
    assert!(a.len() >= 512 && b_zero, "{} values of A", a.len());
    let mean = a.iter().map(|v| f64::from(*v)).sum::<f64>() / a.len() as f64;
    let std = (a
        .iter()
        .map(|v| (f64::from(*v) - mean).powi(2))
        .sum::<f64>()
        / a.len() as f64)
        .sqrt();
    assert!(
        mean.abs() < 0.05 && (std - 0.25).abs() < 0.025,
        "mean {mean}, std {std}"
    );

    let scratch = tempfile::tempdir().unwrap();
    model.save_adapter(scratch.path(), "g").unwrap();
    let saved = std::fs::read_to_string(scratch.path().join("adapter_config.json")).unwrap();
    assert!(saved.contains("\"init_weights\": \"lora\""), "{saved}");
}

/// Bad combinations and files are refused naming the problem, and leave the model unchanged.
#[test]
fn bad_combinations_are_refused() {
    configs_refused_naming_the_field(&[
        ("ia3[init_weights=pissa]", "init_weights"),
        ("vera[init_weights=gaussian]", "init_weights"),
        ("lora[init_weights=olora,use_gating=True]", "init_weights"),
        ("mtl_lora[init_weights=pissa]", "init_weights"),
        ("lora[init_weights=pissa,alpha=0]", "alpha"),
        ("lora[init_weights=pissa_niter_x]", "init_weights"),
    ]);
    let device = device();
    let mut model = BertModel::base(&device);
    let before = snapshot(&model);
    let err = model
        .add_adapter(
            "big",
            AdapterConfig::load("lora[r=33,init_weights=pissa]").unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { field, .. } if field == "r"),
        "{err}"
    );
    let mut gpt2 = burn_adapters::models::gpt2::Gpt2Model::from_pretrained(
        fixtures().join("decoder/gpt2/base"),
        &device,
    )
    .unwrap();
    let err = gpt2
        .add_adapter(
            "fused",
            AdapterConfig::load("lora[init_weights=olora]").unwrap(),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("c_attn")),
        "{err}"
    );
    assert_eq!(before, snapshot(&model));

    // A file whose config says PiSSA holds factors for some residual weights: refused.
    model
        .add_adapter("plain", AdapterConfig::load("lora[r=4]").unwrap())
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    model.save_adapter(scratch.path(), "plain").unwrap();
    let config_path = scratch.path().join("adapter_config.json");
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        text.replace("\"init_weights\": \"lora\"", "\"init_weights\": \"pissa\""),
    )
    .unwrap();
    let err = BertModel::base(&device)
        .load_adapter(scratch.path())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("pissa")),
        "{err}"
    );

    // Averaging would combine factors of different residual weights.
    model
        .add_adapter(
            "p",
            AdapterConfig::load("lora[r=4,init_weights=pissa]").unwrap(),
        )
        .unwrap();
    let sources = [("p", 0.5), ("p", 0.5)];
    let err = model
        .average_adapter("avg", &sources, AverageStrategy::Linear)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("pissa")),
        "{err}"
    );
    assert!(!model.has_adapter("avg"));
}
