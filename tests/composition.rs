//! Composition blocks against AdapterHub fixtures (tests/fixtures/composition), row routing
//! against single-adapter runs, AdapterFusion files and training, averaging, and the text form.

mod common;

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Int, Tensor};
use burn_adapters::config::FusionConfig;
use burn_adapters::model::AverageStrategy;
use burn_adapters::models::bert::{BertInput, BertModel};
use burn_adapters::prelude::*;
use common::snapshot::snapshot;
use common::*;
use serde_json::Value;

const TOLERANCE: f64 = 1e-5;

fn case(name: &str) -> PathBuf {
    fixtures().join("composition").join(name)
}

fn setup_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("setup.json")).unwrap()).unwrap()
}

/// Our text form of the reference's `setup_dict`. `average_scale` rescales Average weights into
/// our true weighted average: AdapterHub computes `(1/N)·Σ ŵᵢ·hᵢ` with normalised `ŵ`, which is
/// ours with un-normalised weights `ŵᵢ/N`.
fn text_form(node: &Value) -> String {
    if let Some(name) = node.as_str() {
        return name.to_string();
    }
    let kind = node["type"].as_str().unwrap();
    let children: Vec<String> = node["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(text_form)
        .collect();
    if kind == "single" {
        return children[0].clone();
    }
    let kwargs = &node["kwargs"];
    let list = |key: &str| -> Vec<f64> {
        kwargs[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let join = |v: &[f64]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let args = match kind {
        "Split" => format!("(splits={})", join(&list("splits"))),
        "BatchSplit" => format!("(batch_sizes={})", join(&list("batch_sizes"))),
        "Average" => {
            let w = list("weights");
            let total: f64 = w.iter().sum();
            let n = w.len() as f64;
            let scaled: Vec<f64> = w.iter().map(|x| x / total / n).collect();
            format!("(weights={}, normalize_weights=false)", join(&scaled))
        }
        _ => String::new(),
    };
    format!("{kind}[{}]{args}", children.join(", "))
}

/// The base model with the case's adapters (and fusion) loaded.
fn load_case(dir: &Path, device: &Device) -> BertModel {
    let mut model = base_model(device);
    let setup = setup_json(dir);
    let averaged = setup["average_adapter"]["name"]
        .as_str()
        .map(str::to_string);
    for name in setup["adapters"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        if Some(name) != averaged.as_deref() {
            model.load_adapter(dir.join(name)).unwrap();
        }
    }
    if let Some(fusion) = setup["fusion"].as_str() {
        model.load_adapter_fusion(dir.join(fusion)).unwrap();
    }
    model
}

fn hidden(model: &BertModel, device: &Device) -> Vec<f32> {
    values(model.forward(fixture_inputs(device)).last_hidden_state)
}

fn rows(values: &[f32], from: usize, to: usize) -> Vec<f32> {
    values[from * 7 * 32..to * 7 * 32].to_vec()
}

#[test]
fn composition_blocks_match_the_reference() {
    let device = device();
    let mut checked = 0;
    for name in [
        "stack_bn",
        "stack_lora",
        "stack_lora_bn",
        "fuse_dynamic",
        "fuse_static",
        "split_bn",
        "batchsplit_bn",
        "batchsplit_lora",
        "parallel_bn",
        "average_bn",
        "average_lora",
        "nested_stack_parallel",
        "nested_stack_fuse",
        "fuse_nested_stack",
        // synthesized where the reference crashes: every row equals its adapter alone
        "parallel_lora",
        "batchsplit_bn_lora",
        "parallel_lora_bn",
    ] {
        let dir = case(name);
        let spec = setup_json(&dir);
        let text = text_form(&spec["setup_dict"]);
        let mut model = load_case(&dir, &device);
        model
            .set_active_adapters(AdapterSetup::parse(&text).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {text}: {e}"));
        let (shape, want) = read_tensor(&dir.join("expected.safetensors"), "last_hidden_state");
        let out = model.forward(fixture_inputs(&device)).last_hidden_state;
        assert_eq!(out.dims().to_vec(), shape, "{name}");
        let delta = max_abs_diff(&values(out), &want);
        println!("{name:<24} {text:<60} max |Δ| = {delta:.2e}");
        assert!(delta <= TOLERANCE, "{name}: {delta:e}");
        checked += 1;
    }
    assert_eq!(checked, 17);
}

#[test]
fn batch_split_rows_equal_their_adapter_alone_where_the_reference_does_not() {
    // AdapterHub applies c's pre-forward to every row before the Stack child applies it again,
    // so its row 0 is not Stack[c, a]. Ours is; row 1 (plain b) agrees with the reference.
    let device = device();
    let dir = case("nested_batchsplit_stack");
    let mut model = load_case(&dir, &device);
    model
        .set_active_adapters(
            AdapterSetup::parse("BatchSplit[Stack[c, a], b](batch_sizes=1,1)").unwrap(),
        )
        .unwrap();
    let got = hidden(&model, &device);
    let want = read_tensor(&dir.join("expected.safetensors"), "last_hidden_state").1;
    model
        .set_active_adapters(AdapterSetup::stack(["c", "a"]))
        .unwrap();
    let stack = hidden(&model, &device);
    assert_eq!(rows(&got, 0, 1), rows(&stack, 0, 1));
    assert!(max_abs_diff(&rows(&got, 1, 2), &want[7 * 32..]) <= TOLERANCE);
    let quirk = max_abs_diff(&rows(&got, 0, 1), &want[..7 * 32]);
    println!("reference row 0 differs from Stack[c, a] alone by {quirk:.2e}");
    assert!(quirk > 1e-2);
}

#[test]
fn average_adapter_matches_the_reference() {
    let device = device();
    for name in [
        "average_adapter_bn",
        "average_adapter_lora_linear",
        "average_adapter_lora_negate_b",
        "average_adapter_lora_svd",
    ] {
        let dir = case(name);
        let spec = &setup_json(&dir)["average_adapter"];
        let mut model = load_case(&dir, &device);
        let sources: Vec<(String, f64)> = spec["adapter_list"]
            .as_array()
            .unwrap()
            .iter()
            .zip(spec["weights"].as_array().unwrap())
            .map(|(n, w)| (n.as_str().unwrap().to_string(), w.as_f64().unwrap()))
            .collect();
        let normalize = spec["normalize_weights"].as_bool().unwrap_or(true);
        let total: f64 = sources.iter().map(|(_, w)| w).sum();
        let sources: Vec<(&str, f64)> = sources
            .iter()
            .map(|(n, w)| (n.as_str(), if normalize { w / total } else { *w }))
            .collect();
        let strategy = match spec["combine_strategy"].as_str().unwrap() {
            "linear" => AverageStrategy::Linear,
            "lora_linear_only_negate_b" => AverageStrategy::LoraLinearOnlyNegateB,
            "lora_delta_w_svd" => AverageStrategy::LoraDeltaWSvd {
                rank: spec["svd_rank"].as_u64().unwrap() as usize,
            },
            other => panic!("{other}"),
        };
        let new = spec["name"].as_str().unwrap();
        model.average_adapter(new, &sources, strategy).unwrap();
        model.set_active_adapters(new).unwrap();
        let delta = max_abs_diff(
            &hidden(&model, &device),
            &read_tensor(&dir.join("expected.safetensors"), "last_hidden_state").1,
        );
        println!("{name:<32} max |Δ| = {delta:.2e}");
        assert!(delta <= TOLERANCE, "{name}: {delta:e}");
    }
}

#[test]
fn per_row_and_batch_split_equal_single_runs_and_train() {
    let device = device();
    let mut model = load_case(&case("batchsplit_bn_lora"), &device);
    model.load_adapter(case("stack_bn").join("b")).unwrap();
    let batch = 6;
    let ids = Tensor::<2, Int>::random([batch, 5], Distribution::Uniform(1.0, 90.0), &device);
    let mask = Tensor::<2, Int>::ones([batch, 5], &device);
    let input = || BertInput::new(ids.clone(), mask.clone());
    let run = |model: &BertModel| values(model.forward(input()).last_hidden_state);
    let per_row = 5 * 32;
    let mut alone = std::collections::HashMap::new();
    for name in ["a", "la", "b"] {
        model.set_active_adapters(name).unwrap();
        alone.insert(Some(name), run(&model));
    }
    model.deactivate_adapters();
    alone.insert(None, run(&model));

    let assignment = [
        Some("la"),
        None,
        Some("a"),
        Some("b"),
        Some("la"),
        Some("a"),
    ];
    let setup = AdapterSetup::PerRow(assignment.iter().map(|a| a.map(str::to_string)).collect());
    assert_eq!(setup.to_string(), "PerRow[la, (), a, b, la, a]");
    model.set_active_adapters(setup).unwrap();
    let mixed = run(&model);
    for (row, name) in assignment.iter().enumerate() {
        let want = &alone[name][row * per_row..(row + 1) * per_row];
        let got = &mixed[row * per_row..(row + 1) * per_row];
        let delta = max_abs_diff(got, &as_f64(want));
        assert!(delta <= 1e-6, "row {row} ({name:?}): {delta:e}");
    }

    model
        .set_active_adapters(
            AdapterSetup::parse("BatchSplit[la, Stack[a], b](batch_sizes=2,1,3)").unwrap(),
        )
        .unwrap();
    let split = run(&model);
    for (row, name) in ["la", "la", "a", "b", "b", "b"].iter().enumerate() {
        let want = &alone[&Some(*name)][row * per_row..(row + 1) * per_row];
        let delta = max_abs_diff(&split[row * per_row..(row + 1) * per_row], &as_f64(want));
        assert!(delta <= 1e-6, "BatchSplit row {row}: {delta:e}");
    }

    // Mixed batches train: only the assigned adapters' parameters move.
    let device = Device::flex().autodiff();
    let mut model = base_model(&device);
    model.add_adapter("x", BnConfig::seq_bn()).unwrap();
    model
        .add_adapter("y", AdapterConfig::load("lora[init_weights=bert]").unwrap())
        .unwrap();
    model
        .train_adapter(AdapterSetup::stack(["x", "y"]))
        .unwrap();
    model
        .set_active_adapters(AdapterSetup::PerRow(vec![
            Some("x".into()),
            Some("y".into()),
        ]))
        .unwrap();
    let before = snapshot(&model);
    let ids = Tensor::<2, Int>::from_ints([[2, 5, 9, 3], [2, 7, 8, 3]], &device);
    let out = model
        .forward(BertInput::new(ids, Tensor::ones([2, 4], &device)))
        .last_hidden_state;
    let target = Tensor::<3>::random([2, 4, 32], Distribution::Normal(0.0, 1.0), &device);
    let loss = (out - target).powi_scalar(2).mean();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let model = AdamConfig::new().init().step(1e-2, model, grads);
    let after = snapshot(&model);
    for (path, old) in &before {
        let trains = path.contains(".adapters.x.") || path.contains(".loras.y.");
        if !trains {
            assert_eq!(old, &after[path], "{path}");
        }
    }
    assert!(
        before
            .iter()
            .any(|(p, v)| p.contains(".adapters.x.") && v != &after[p])
    );
    assert!(
        before
            .iter()
            .any(|(p, v)| p.contains(".loras.y.") && v != &after[p])
    );
}

#[test]
fn parallel_branches_equal_each_adapter_alone() {
    let device = device();
    let mut model = load_case(&case("parallel_lora_bn"), &device);
    model
        .set_active_adapters(AdapterSetup::parse("Parallel[la, a]").unwrap())
        .unwrap();
    let out = model.forward(fixture_inputs(&device)).last_hidden_state;
    let branches = model.split_parallel(out).unwrap();
    assert_eq!(branches.len(), 2);
    for (branch, name) in branches.into_iter().zip(["la", "a"]) {
        let mut alone = model.clone();
        alone.set_active_adapters(name).unwrap();
        assert_eq!(values(branch), hidden(&alone, &device), "{name}");
    }
}

#[test]
fn fusion_trains_saves_and_loads() {
    let device = Device::flex().autodiff();
    let dir = case("fuse_dynamic");
    let mut model = base_model(&device);
    model.load_adapter(dir.join("a")).unwrap();
    model.load_adapter(dir.join("b")).unwrap();
    let fuse = AdapterSetup::parse("Fuse[a, b]").unwrap();
    assert!(matches!(
        model.set_active_adapters(fuse.clone()),
        Err(Error::UnknownFusion(key)) if key == "a,b"
    ));
    model
        .add_adapter_fusion(fuse.clone(), FusionConfig::load("dynamic").unwrap())
        .unwrap();
    // The identity-initialised value regularisation is ~0 before training.
    model.train_adapter_fusion(fuse.clone(), false).unwrap();
    let reg = model
        .fusion_regularization_loss()
        .unwrap()
        .into_scalar::<f32>();
    assert!(reg < 1e-6, "{reg}");
    let summary = model.adapter_summary();
    assert_eq!(
        summary.base_params,
        base_model(&Device::flex()).adapter_summary().base_params
    );

    let before = snapshot(&model);
    let out = model.forward(fixture_inputs(&device)).last_hidden_state;
    let target = Tensor::<3>::random([2, 7, 32], Distribution::Normal(0.0, 1.0), &device);
    let loss = (out - target).powi_scalar(2).mean() + model.fusion_regularization_loss().unwrap();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let model = AdamConfig::new().init().step(1e-2, model, grads);
    let after = snapshot(&model);
    for (path, old) in &before {
        if path.contains(".a,b.") {
            assert_ne!(old, &after[path], "{path} should train");
        } else {
            assert_eq!(old, &after[path], "{path} should stay frozen");
        }
    }

    let out_dir = tempfile::tempdir().unwrap();
    model
        .save_adapter_fusion(out_dir.path(), fuse.clone())
        .unwrap();
    let mut again = base_model(&device);
    again.load_adapter(dir.join("a")).unwrap();
    again.load_adapter(dir.join("b")).unwrap();
    assert_eq!(again.load_adapter_fusion(out_dir.path()).unwrap(), "a,b");
    again.set_active_adapters(fuse.clone()).unwrap();
    let mut model = model;
    model.set_active_adapters(fuse).unwrap();
    assert_eq!(
        values(
            model
                .valid()
                .forward(fixture_inputs(&Device::flex()))
                .last_hidden_state
        ),
        values(
            again
                .valid()
                .forward(fixture_inputs(&Device::flex()))
                .last_hidden_state
        )
    );
    // deleting a fused adapter removes the fusion
    again.delete_adapter("a").unwrap();
    assert_eq!(again.registry().fusions().count(), 0);
}

#[test]
fn text_form_round_trips_and_rejects_disallowed_nestings() {
    // Random nestings built from the allowed table round-trip through the text form.
    let mut state = 7u64;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    fn build(kind: u64, depth: u32, next: &mut dyn FnMut(u64) -> u64) -> AdapterSetup {
        let allowed: &[u64] = match kind {
            1 => &[0, 2, 3, 4, 5, 6], // Stack
            2 => &[0, 1],             // Fuse
            3 => &[0, 3, 1, 4, 6],    // Split
            5 => &[0, 1, 4, 6],       // Parallel
            4 => &[0, 1, 3, 4, 6],    // BatchSplit
            _ => &[0, 1, 3, 4],       // Average
        };
        let n = 2 + next(2) as usize;
        let children: Vec<AdapterSetup> = (0..n)
            .map(|i| {
                let k = if depth == 0 {
                    0
                } else {
                    allowed[next(allowed.len() as u64) as usize]
                };
                if k == 0 {
                    AdapterSetup::Name(format!("a{}", next(5) + i as u64))
                } else {
                    build(k, depth - 1, next)
                }
            })
            .collect();
        match kind {
            1 => AdapterSetup::Stack(children),
            2 => AdapterSetup::Fuse(children),
            3 => AdapterSetup::Split {
                splits: (0..n).map(|_| 1 + next(4) as usize).collect(),
                children,
            },
            4 => AdapterSetup::BatchSplit {
                batch_sizes: (0..n).map(|_| 1 + next(3) as usize).collect(),
                children,
            },
            5 => AdapterSetup::Parallel(children),
            _ => AdapterSetup::Average {
                weights: (0..n).map(|_| next(1000) as f64 / 7.0 + 0.1).collect(),
                normalize_weights: next(2) == 0,
                children,
            },
        }
    }
    let mut checked = 0;
    for _ in 0..300 {
        let kind = 1 + next(6);
        let setup = build(kind, 2, &mut next);
        if setup.validate().is_err() {
            continue; // e.g. two Parallel blocks
        }
        let text = setup.to_string();
        assert_eq!(AdapterSetup::parse(&text).unwrap(), setup, "{text}");
        checked += 1;
    }
    assert!(checked > 200, "{checked}");

    // Every pair outside AdapterHub's ALLOWED_NESTINGS is rejected, naming the inner block.
    let blocks = [
        ("Stack", "Stack[x, y]"),
        ("Fuse", "Fuse[x, y]"),
        ("Split", "Split[x, y](splits=1,1)"),
        ("BatchSplit", "BatchSplit[x, y](batch_sizes=1,1)"),
        ("Parallel", "Parallel[x, y]"),
        ("Average", "Average[x, y](weights=0.5,0.5)"),
    ];
    let allowed = |outer: &str, inner: &str| match outer {
        "Stack" => ["Fuse", "Split", "Parallel", "BatchSplit", "Average"].contains(&inner),
        "Fuse" => inner == "Stack",
        "Split" => ["Split", "Stack", "BatchSplit", "Average"].contains(&inner),
        "Parallel" => ["Stack", "BatchSplit", "Average"].contains(&inner),
        "BatchSplit" => ["Stack", "Split", "BatchSplit", "Average"].contains(&inner),
        "Average" => ["Stack", "Split", "BatchSplit"].contains(&inner),
        _ => unreachable!(),
    };
    let mut rejected = 0;
    for (outer, outer_text) in blocks {
        for (inner, inner_text) in blocks {
            let text = outer_text.replacen("x", inner_text, 1);
            let result = AdapterSetup::parse(&text);
            if allowed(outer, inner) {
                result.unwrap_or_else(|e| panic!("{text}: {e}"));
            } else {
                let err = result.unwrap_err().to_string();
                assert!(err.contains(inner_text), "{text}: {err}");
                rejected += 1;
            }
        }
    }
    println!("{rejected} disallowed nestings rejected");
    assert_eq!(rejected, 36 - 20);
    for bad in [
        "Split[a, b]",
        "Average[a](weights=1,2)",
        "Stack[]",
        "Fuse[a]",
        "Stack[a",
        "Bogus[a]",
    ] {
        assert!(AdapterSetup::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn average_is_the_weighted_sum_of_the_childrens_updates() {
    // At a LoRA site the children's contributions are linear in the output, so the formula can
    // be checked exactly: Average[la, lb](weights=0.3,0.7) = y0 + 0.3·δ_la + 0.7·δ_lb.
    let device = device();
    let model = load_case(&case("average_lora"), &device);
    let x = Tensor::<3>::random([2, 5, 32], Distribution::Normal(0.0, 1.0), &device);
    let run = |setup: &str| {
        let mut model = model.clone();
        model.set_active_adapters(setup).unwrap();
        let site = &model.encoder.layer[0].attention.self_attention.query;
        site.forward(x.clone())
    };
    let base = model.encoder.layer[0]
        .attention
        .self_attention
        .query
        .linear()
        .forward(x.clone());
    let (da, db) = (run("la") - base.clone(), run("lb") - base.clone());
    let want = base + da.mul_scalar(0.3) + db.mul_scalar(0.7);
    let got = run("Average[la, lb](weights=0.3,0.7)");
    let delta = max_abs_diff(&values(got), &as_f64(&values(want)));
    assert!(delta <= 1e-6, "{delta:e}");
    // Un-normalised weights are used as given.
    let got = run("Average[la, lb](weights=3,7)");
    let want = run("Average[la, lb](weights=30,70, normalize_weights=false)");
    let delta = max_abs_diff(&values(got), &as_f64(&values(want.div_scalar(1.0))));
    assert!(delta > 1e-3, "normalisation must matter: {delta:e}");
}
