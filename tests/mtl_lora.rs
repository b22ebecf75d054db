//! MTL-LoRA against AdapterHub (`tools/gen_fixtures_mtl_lora.py`) on BERT, Llama and GPT-2:
//! outputs, parameter counts, the `MultiTask` block over adapters sharing `A` and `B`, cached
//! generation, files both ways, merging, training and bad configs.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use burn_adapters::model::AverageStrategy;
use burn_adapters::models::bert::BertModel;
use burn_adapters::models::gpt2::Gpt2Model;
use burn_adapters::models::llama::LlamaModel;
use burn_adapters::prelude::*;
use common::decoder::*;
use common::families::{
    Family, cases_match_reference, deviation, export_dir, export_root, generates_as_reference,
    listed_cases, merge_computes_the_same_and_resets, moved, rust_saved_cases_reload,
    save_and_reload,
};
use common::snapshot::snapshot;
use common::*;

const TOLERANCE: f64 = 1e-5;

const CASES: usize = 5;

fn family_dir<F: Family>() -> PathBuf {
    fixtures().join("mtl_lora").join(F::NAME)
}

#[test]
fn bert_mtl_loras_match_adapterhub() {
    cases_match_reference::<BertModel>("mtl_lora", CASES, TOLERANCE, &device());
}

#[test]
fn llama_mtl_loras_match_adapterhub() {
    cases_match_reference::<LlamaModel>("mtl_lora", CASES, TOLERANCE, &device());
}

#[test]
fn gpt2_mtl_loras_match_adapterhub() {
    cases_match_reference::<Gpt2Model>("mtl_lora", CASES, TOLERANCE, &device());
}

/// A gate averages over the whole sequence, so a cached step (which sees only its new tokens)
/// cannot equal a recompute: the gated case is compared in full forwards only.
const GATED: &str = "mtl_gated";

#[test]
fn llama_generation_with_mtl_lora_matches_transformers() {
    for (name, _, dir) in listed_cases::<LlamaModel>("mtl_lora", CASES) {
        if name != GATED {
            generates_as_reference::<LlamaModel>(&dir, &device());
        }
    }
}

#[test]
fn gpt2_generation_with_mtl_lora_matches_transformers() {
    for (name, _, dir) in listed_cases::<Gpt2Model>("mtl_lora", CASES) {
        if name != GATED {
            generates_as_reference::<Gpt2Model>(&dir, &device());
        }
    }
}

/// Rust-saved files reload the same; under `BURN_ADAPTERS_EXPORT_MTL_LORA` they go to
/// `<dir>/bert/<case>` and `<dir>/decoder/<family>/<case>` for the Python checkers, with an
/// adapter saved while it shares its factors.
fn rust_saved_files_reload_exactly<F: Family>(root: &Path) {
    let device = device();
    rust_saved_cases_reload::<F>("mtl_lora", CASES, root, &device);
    let dir = family_dir::<F>().join("multi_task");
    let mut model = F::base(&device);
    model.load_adapter(dir.join("a")).unwrap();
    model.load_adapter(dir.join("b")).unwrap();
    model.share_parameters(&["a", "b"], Some("b")).unwrap();
    model.set_active_adapters("a").unwrap();
    save_and_reload(
        &model,
        "a",
        &export_dir::<F>(root).join("shared_a"),
        &device,
    );
}

#[test]
fn rust_saved_mtl_loras_reload_exactly() {
    let (_scratch, root) = export_root("BURN_ADAPTERS_EXPORT_MTL_LORA");
    rust_saved_files_reload_exactly::<BertModel>(&root);
    rust_saved_files_reload_exactly::<LlamaModel>(&root);
    rust_saved_files_reload_exactly::<Gpt2Model>(&root);
}

/// Merging folds `A Λ Σ ŵₖ Bₖ · alpha / r` into the weights: the merged model computes the
/// unmerged output, and resetting restores the weights.
#[test]
fn a_merged_mtl_lora_computes_the_same() {
    let device = device();
    let dir = family_dir::<LlamaModel>().join("mtl_linear");
    let mut model = LlamaModel::base(&device);
    model.load_adapter(&dir).unwrap();
    model.set_active_adapters("mtl_linear").unwrap();
    merge_computes_the_same_and_resets(&mut model, "mtl_linear", &device);
}

/// Training moves `A`, the up projections, the task matrix and the mixing weights; nothing else.
#[test]
fn training_moves_only_the_mtl_lora() {
    let device = Device::flex().autodiff();
    let mut model =
        LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), &device).unwrap();
    let config = AdapterConfig::load("mtl_lora[n_up_projection=2,r=2,init_weights=bert]").unwrap();
    model.add_adapter("m", config).unwrap();
    model.train_adapter("m").unwrap();
    let before = snapshot(&model);
    let (model, losses) = train_steps(model, |m, input| m.forward(input), &device);
    assert!(losses.last() < losses.first(), "{losses:?}");
    let moved = moved(&before, &model);
    for path in &moved {
        assert!(path.contains(".m."), "{path} moved");
    }
    for part in [
        "lora_a",
        "multi_task.lora_b",
        "SingularValues",
        "multi_task.weights",
    ] {
        assert!(moved.iter().any(|p| p.contains(part)), "{part}: {moved:?}");
    }
}

#[test]
fn bad_mtl_lora_configs_are_errors() {
    configs_refused_naming_the_field(&[
        ("mtl_lora[n_up_projection=0]", "n_up_projection"),
        ("mtl_lora[weights_sharpness=0]", "weights_sharpness"),
        ("mtl_lora[composition_mode=scale,r=1]", "composition_mode"),
        (
            "mtl_lora[task_specific_matrix_type=diagonal]",
            "task_specific_matrix_type",
        ),
        ("mtl_lora|lora", "configs"),
    ]);
    // AdapterHub's MTL-LoRA fails on GPT-2's fused attention projection; here it is refused
    let device = device();
    let mut gpt2 = Gpt2Model::base(&device);
    let err = gpt2
        .add_adapter("m", AdapterConfig::load("mtl_lora").unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    assert!(!gpt2.has_adapter("m"));
    let mut bert = base_model(&device);
    bert.add_adapter("m", AdapterConfig::load("mtl_lora").unwrap())
        .unwrap();
    let err = bert
        .save_peft_adapter(tempfile::tempdir().unwrap().path(), "m")
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
}

/// `MultiTask[a, b](task_ids=...)` runs each row through its task's adapter; the two adapters'
/// files hold the `A` and `B` that `share_parameters` shared in Python.
fn multi_task_routes_rows_by_task<F: Family>() {
    let device = device();
    let dir = family_dir::<F>().join("multi_task");
    let mut model = F::base(&device);
    model.load_adapter(dir.join("a")).unwrap();
    model.load_adapter(dir.join("b")).unwrap();
    let expected = dir.join("expected.safetensors");
    let (_, task_ids) = read_tensor(&expected, "task_ids");
    let task_ids: Vec<usize> = task_ids.iter().map(|t| *t as usize).collect();
    let text = format!(
        "MultiTask[a, b](task_ids={})",
        task_ids
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let setup = AdapterSetup::multi_task(["a", "b"], task_ids);
    assert_eq!(setup.to_string(), text);
    assert_eq!(AdapterSetup::parse(&text).unwrap(), setup);
    model.set_active_adapters(setup).unwrap();
    let d = deviation::<F>(model.output(&device), &expected, F::OUTPUT, &device);
    println!("{} multi_task: max |Δ| {d:.2e}", F::NAME);
    assert!(d <= TOLERANCE, "{} multi_task: max |Δ| {d}", F::NAME);
}

#[test]
fn multi_task_blocks_route_rows_as_in_adapterhub() {
    multi_task_routes_rows_by_task::<BertModel>();
    multi_task_routes_rows_by_task::<LlamaModel>();
    multi_task_routes_rows_by_task::<Gpt2Model>();
}

#[test]
fn bad_multi_task_setups_are_errors() {
    let device = device();
    let mut model = base_model(&device);
    for name in ["a", "b"] {
        model
            .add_adapter(name, AdapterConfig::load("mtl_lora").unwrap())
            .unwrap();
    }
    model
        .add_adapter("p", AdapterConfig::load("prompt_tuning").unwrap())
        .unwrap();
    for setup in [
        "MultiTask[a, b](task_ids=0,2)",
        "MultiTask[a, p](task_ids=0,1)",
        "MultiTask[a, Parallel[a, b]](task_ids=0)",
        "Parallel[a, MultiTask[a, b](task_ids=0)]",
    ] {
        let err = model.set_active_adapters(setup).unwrap_err();
        assert!(matches!(err, Error::InvalidSetup(_)), "{setup}: {err}");
    }
    model
        .set_active_adapters("Stack[MultiTask[a, b](task_ids=1,0,1)]")
        .unwrap();
}

/// `share_parameters` gives the tasks one `A` and one set of up projections (the fixture's
/// adapters already hold equal ones, as Python saved them shared): the outputs stay, the
/// factors sit once at each site, files written from a shared adapter reload the same, and
/// `unshare_parameters` gives each its own copy back.
#[test]
fn shared_factors_compute_the_same_and_save_into_each_file() {
    let device = device();
    let dir = family_dir::<LlamaModel>().join("multi_task");
    let mut model = LlamaModel::base(&device);
    model.load_adapter(dir.join("a")).unwrap();
    model.load_adapter(dir.join("b")).unwrap();
    model
        .set_active_adapters("MultiTask[a, b](task_ids=1,0)")
        .unwrap();
    let before = model.output(&device);
    let params = model.adapter_summary();
    model.share_parameters(&["a", "b"], Some("b")).unwrap();
    let site = model.linear_sites().next().unwrap();
    assert_eq!(site.share_members("a,b"), ["a", "b"]);
    assert!(site.loras().get("a").unwrap().lora_a.is_none());
    assert_eq!(values(model.output(&device)), values(before.clone()));
    let shared = model.adapter_summary();
    assert_eq!(
        shared.adapters, params.adapters,
        "rows count what each adapter uses"
    );
    let a = shared.adapters[0].num_params;
    let r = 4 * (32 + 2 * 32); // A and two up projections at one site
    assert_eq!(shared.base_params, params.base_params);
    assert!(a > r);

    let scratch = tempfile::tempdir().unwrap();
    model.save_adapter(scratch.path().join("a"), "a").unwrap();
    let mut reloaded = LlamaModel::base(&device);
    reloaded.load_adapter(scratch.path().join("a")).unwrap();
    reloaded.load_adapter(dir.join("b")).unwrap();
    reloaded
        .set_active_adapters("MultiTask[a, b](task_ids=1,0)")
        .unwrap();
    assert_eq!(values(reloaded.output(&device)), values(before.clone()));

    model.unshare_parameters(&["a", "b"]).unwrap();
    let site = model.linear_sites().next().unwrap();
    assert!(site.shared().is_empty());
    assert!(site.loras().get("a").unwrap().lora_a.is_some());
    assert_eq!(values(model.output(&device)), values(before));
}

/// Training a `MultiTask` of sharing adapters moves the shared factors (once, at the site) and
/// each task's matrix and weights; the tasks never drift apart in `A`.
#[test]
fn training_shared_tasks_moves_the_shared_factors_once() {
    let device = Device::flex().autodiff();
    let mut model =
        LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), &device).unwrap();
    let config = AdapterConfig::load("mtl_lora[n_up_projection=2,r=2,init_weights=bert]").unwrap();
    model.add_adapter("a", config.clone()).unwrap();
    model.add_adapter("b", config).unwrap();
    model.share_parameters(&["a", "b"], None).unwrap();
    model
        .train_adapter("MultiTask[a, b](task_ids=0,1)")
        .unwrap();
    let before = snapshot(&model);
    let (model, losses) = train_steps(model, |m, input| m.forward(input), &device);
    assert!(losses.last() < losses.first(), "{losses:?}");
    let moved = moved(&before, &model);
    for path in &moved {
        assert!(
            path.contains(".a.") || path.contains(".b.") || path.contains("shared_parameters.a,b."),
            "{path} moved"
        );
    }
    for part in [
        "shared_parameters.a,b.lora_a",
        "shared_parameters.a,b.lora_b",
        "loras.a.multi_task.weights",
        "loras.b.multi_task.task_specific",
    ] {
        assert!(moved.iter().any(|p| p.contains(part)), "{part}: {moved:?}");
    }
}

#[test]
fn bad_shares_are_errors() {
    let device = device();
    let mut model = base_model(&device);
    model
        .add_adapter("a", AdapterConfig::load("mtl_lora").unwrap())
        .unwrap();
    model
        .add_adapter("b", AdapterConfig::load("mtl_lora[r=4]").unwrap())
        .unwrap();
    model
        .add_adapter("l", AdapterConfig::load("lora").unwrap())
        .unwrap();
    model
        .add_adapter("c", AdapterConfig::load("mtl_lora").unwrap())
        .unwrap();
    for (names, reference) in [
        (&["a", "l"][..], None),
        (&["a", "b"][..], None),
        (&["a", "c"][..], Some("b")),
        (&[][..], None),
    ] {
        let err = model.share_parameters(names, reference).unwrap_err();
        assert!(matches!(err, Error::InvalidSetup(_)), "{names:?}: {err}");
        let site = model.linear_sites().next().unwrap();
        assert!(site.shared().is_empty(), "{names:?} changed the model");
    }
    let err = model.share_parameters(&["a", "x"], None).unwrap_err();
    assert!(matches!(err, Error::UnknownAdapter(_)), "{err}");
    let err = model.unshare_parameters(&["a", "c"]).unwrap_err();
    assert!(matches!(err, Error::InvalidSetup(_)), "{err}");
    model.share_parameters(&["a", "c"], None).unwrap();
    let sources = [("a", 0.5), ("c", 0.5)];
    let err = model
        .average_adapter("avg", &sources, AverageStrategy::Linear)
        .unwrap_err();
    assert!(matches!(err, Error::InvalidSetup(_)), "{err}");
    // deleting a sharing adapter keeps the other's factors; deleting both drops them
    model.delete_adapter("a").unwrap();
    assert!(!model.linear_sites().next().unwrap().shared().is_empty());
    model.delete_adapter("c").unwrap();
    assert!(model.linear_sites().next().unwrap().shared().is_empty());
}
