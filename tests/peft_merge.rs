//! `add_weighted_adapter` against PEFT's (`tools/gen_fixtures_peft_merge.py`): every combination
//! type's merged factors (or, for the SVD ones, updates) and outputs, DARE's statistics, and bad
//! combinations.

mod common;

use std::path::PathBuf;

use burn::tensor::Device;
use burn_adapters::model::{Combination, MajoritySign, TaskMerge};
use burn_adapters::models::bert::BertModel;
use burn_adapters::prelude::*;
use common::*;

const TOLERANCE: f64 = 1e-5;

/// DARE draws from the device's generator, which the tests of this binary would share while
/// running in parallel: they take turns.
static DEVICE_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    DEVICE_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn dir() -> PathBuf {
    fixtures().join("peft_merge")
}

/// The three PEFT sources of the fixtures, loaded as `a`, `b` and `c`.
fn with_sources(device: &Device) -> BertModel {
    let mut model = base_model(device);
    for name in ["a", "b", "c"] {
        model
            .load_peft_adapter(dir().join("sources").join(name), name)
            .unwrap();
    }
    model
}

/// PEFT's keyword arguments as a [`Combination`].
fn combination(case: &serde_json::Value) -> Combination {
    let density = case["density"].as_f64().unwrap_or(1.0);
    let majority_sign = match case["majority_sign_method"].as_str() {
        Some("frequency") => MajoritySign::Frequency,
        _ => MajoritySign::Total,
    };
    let kind = case["combination_type"].as_str().unwrap();
    let merge = match kind.trim_end_matches("_svd") {
        "linear" | "svd" => TaskMerge::TaskArithmetic,
        "ties" => TaskMerge::Ties {
            density,
            majority_sign,
        },
        "dare_linear" => TaskMerge::DareLinear { density },
        "dare_ties" => TaskMerge::DareTies {
            density,
            majority_sign,
        },
        "magnitude_prune" => TaskMerge::MagnitudePrune { density },
        "cat" => return Combination::Cat,
        other => panic!("unknown combination {other}"),
    };
    let combination = match kind.ends_with("svd") {
        true => Combination::Svd {
            merge,
            rank: case["svd_rank"].as_u64().map(|r| r as usize),
        },
        false => Combination::Factors(merge),
    };
    assert_eq!(combination.peft_name(), kind);
    combination
}

fn tensor_keys(path: &std::path::Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.names().into_iter().map(str::to_string).collect()
}

#[test]
fn every_combination_matches_peft() {
    let _turn = turn();
    let device = device();
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("cases.json")).unwrap()).unwrap();
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 13);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut model = with_sources(&device);
        let sources: Vec<(&str, f64)> = case["adapters"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["weights"].as_array().unwrap())
            .map(|(a, w)| (a.as_str().unwrap(), w.as_f64().unwrap()))
            .collect();
        model
            .add_weighted_adapter(name, &sources, combination(case))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let config = model.adapter_config(name).unwrap().lora().unwrap().clone();
        assert_eq!(config.r as u64, case["r"].as_u64().unwrap(), "{name}");
        assert_eq!(config.scaling(), 1.0, "{name}");
        let expected = dir().join(format!("{name}.safetensors"));
        let keys = tensor_keys(&expected);
        let mut worst: f64 = 0.0;
        for site in model.linear_sites() {
            let Some(lora) = site.loras().get(name) else {
                continue;
            };
            let path = model.linear_site_path(site.location());
            let module = path.strip_suffix(".loras").unwrap();
            let a = lora.lora_a.as_ref().unwrap().val();
            let b = lora.lora_b.as_ref().unwrap().val();
            // torch layouts: A [r, in], B [out, r], ΔW [out, in]
            let pairs = match keys.contains(&format!("{module}.delta")) {
                true => vec![(a.matmul(b).transpose(), "delta")],
                false => vec![(a.transpose(), "lora_A"), (b.transpose(), "lora_B")],
            };
            for (got, key) in pairs {
                let want = read_tensor(&expected, &format!("{module}.{key}")).1;
                worst = worst.max(max_abs_diff(&values(got), &want));
            }
        }
        model.set_active_adapters(name).unwrap();
        let out_values = values(model.forward(fixture_inputs(&device)).last_hidden_state);
        let d_out = max_abs_diff(&out_values, &read_tensor(&expected, "last_hidden_state").1);
        println!("{name:<20} factors or ΔW max |Δ| {worst:.2e}, output {d_out:.2e}");
        assert!(
            worst <= TOLERANCE && d_out <= TOLERANCE,
            "{name}: {worst} {d_out}"
        );
        // for tools/check_peft_import.py in CI: the merged adapter in PEFT's files
        if let Some(root) = std::env::var_os("BURN_ADAPTERS_EXPORT_PEFT") {
            let out = PathBuf::from(root).join(format!("merge_{name}"));
            model.save_peft_adapter(&out, name).unwrap();
            write_f32(
                &out.join("expected.safetensors"),
                "last_hidden_state",
                &out_values,
                &[2, 7, 32],
            );
        }
    }
}

/// DARE keeps each entry with probability `density`, rescaled by `1/density`; the device's seed
/// makes the draw reproducible. With `b` weighted 0, the merged `A` is `√s_a · drop(A_a)`.
#[test]
fn dare_keeps_a_density_share_rescaled_and_reproducibly() {
    let _turn = turn();
    let device = device();
    let density = 0.3;
    let merged_a = |seed: u64| {
        device.seed(seed);
        let mut model = with_sources(&device);
        let dare = Combination::Factors(TaskMerge::DareLinear { density });
        model
            .add_weighted_adapter("m", &[("a", 1.0), ("b", 0.0)], dare)
            .unwrap();
        let scaling = model.adapter_config("a").unwrap().lora().unwrap().scaling();
        let mut pairs = Vec::new();
        let a_of =
            |lora: &burn_adapters::methods::LoRA| values(lora.lora_a.as_ref().unwrap().val());
        for site in model.linear_sites() {
            if let (Some(merged), Some(source)) = (site.loras().get("m"), site.loras().get("a")) {
                pairs.extend(a_of(merged).into_iter().zip(a_of(source)));
            }
        }
        (pairs, scaling.sqrt() as f32)
    };
    let (pairs, root) = merged_a(5);
    let mut kept = 0usize;
    for (merged, source) in &pairs {
        if *merged != 0.0 {
            let want = source * root / density as f32;
            assert!(
                (merged - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{merged} vs {want}"
            );
            kept += 1;
        }
    }
    // binomial(n, density): within 6 standard deviations
    let n = pairs.len() as f64;
    let sigma = (n * density * (1.0 - density)).sqrt();
    assert!(
        (kept as f64 - n * density).abs() <= 6.0 * sigma,
        "kept {kept} of {n}"
    );
    assert!(merged_a(5).0 == pairs, "the same seed draws the same masks");
    assert!(merged_a(6).0 != pairs, "another seed draws other masks");
}

#[test]
fn bad_combinations_are_errors_that_leave_the_model_unchanged() {
    let _turn = turn();
    let device = device();
    let mut model = with_sources(&device);
    model
        .add_adapter(
            "gated",
            AdapterConfig::load("lora[use_gating=true]").unwrap(),
        )
        .unwrap();
    model
        .add_adapter("dora", AdapterConfig::load("dora").unwrap())
        .unwrap();
    model
        .add_adapter("ia3", AdapterConfig::load("ia3").unwrap())
        .unwrap();
    model
        .add_adapter(
            "ffn",
            AdapterConfig::load("lora[r=4,selfattn_lora=false,output_lora=true]").unwrap(),
        )
        .unwrap();
    let names = model.adapter_names();
    let ties = TaskMerge::Ties {
        density: 0.5,
        majority_sign: MajoritySign::Total,
    };
    let svd = |rank| Combination::Svd {
        merge: TaskMerge::TaskArithmetic,
        rank: Some(rank),
    };
    type Sources<'a> = &'a [(&'a str, f64)];
    let setup_errors: Vec<(Sources, Combination, &str)> = vec![
        (
            &[("a", 1.0), ("c", 1.0)],
            Combination::Factors(ties),
            "ranks must agree",
        ),
        (
            &[("a", 1.0), ("c", 1.0)],
            Combination::Factors(TaskMerge::TaskArithmetic),
            "r = 2",
        ),
        (
            &[("a", 1.0), ("gated", 1.0)],
            Combination::Cat,
            "`gated` is not a plain LoRA",
        ),
        (
            &[("dora", 1.0), ("a", 1.0)],
            Combination::Cat,
            "`dora` is not a plain LoRA",
        ),
        (
            &[("ia3", 1.0), ("a", 1.0)],
            Combination::Cat,
            "`ia3` is not a plain LoRA",
        ),
        (
            &[("a", 1.0), ("ffn", 1.0)],
            Combination::Cat,
            "other projections",
        ),
        (
            &[("a", f64::NAN), ("b", 1.0)],
            Combination::Cat,
            "weight of `a`",
        ),
        (&[], Combination::Cat, "at least one"),
    ];
    for (sources, combination, message) in setup_errors {
        let err = model
            .add_weighted_adapter("m", sources, combination)
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidSetup(m) if m.contains(message)),
            "{sources:?}: {err}"
        );
    }
    let config_errors = [
        (svd(0), "svd_rank"),
        (svd(33), "svd_rank"),
        (
            Combination::Factors(TaskMerge::MagnitudePrune { density: 1.5 }),
            "density",
        ),
        (
            Combination::Factors(TaskMerge::DareLinear { density: -0.1 }),
            "density",
        ),
    ];
    for (combination, field) in config_errors {
        let err = model
            .add_weighted_adapter("m", &[("a", 1.0), ("b", 1.0)], combination)
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { field: f, .. } if f == field),
            "{combination:?}: {err}"
        );
    }
    let err = model
        .add_weighted_adapter("m", &[("a", 1.0), ("x", 1.0)], Combination::Cat)
        .unwrap_err();
    assert!(matches!(err, Error::UnknownAdapter(_)), "{err}");
    let err = model
        .add_weighted_adapter("b", &[("a", 1.0)], Combination::Cat)
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateAdapter(_)), "{err}");
    assert_eq!(model.adapter_names(), names);
}
