//! Compacter and Compacter++ (PHM projections) against AdapterHub
//! (`tools/gen_fixtures_compacter.py`) on BERT, Llama and GPT-2: outputs, parameter counts,
//! cached generation, files both ways, training, a rule shared across layers, and bad configs.

mod common;

use burn::tensor::Device;
use burn_adapters::model::AverageStrategy;
use burn_adapters::models::bert::BertModel;
use burn_adapters::models::gpt2::Gpt2Model;
use burn_adapters::models::llama::LlamaModel;
use burn_adapters::prelude::*;
use common::decoder::*;
use common::families::{
    Family, cases_match_reference, export_root, generates_as_reference, listed_cases, moved,
    rust_saved_cases_reload, save_and_reload,
};
use common::snapshot::{snapshot, trainable};
use common::*;

const TOLERANCE: f64 = 1e-5;
const BERT_CASES: usize = 5;
const LLAMA_CASES: usize = 3;
const GPT2_CASES: usize = 2;

#[test]
fn presets_match_adapterhubs() {
    let presets: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("compacter/presets.json")).unwrap(),
    )
    .unwrap();
    for (name, expected) in presets.as_object().unwrap() {
        let ours = AdapterConfig::from(BnConfig::preset(name).unwrap());
        assert_eq!(&ours.to_json(), expected, "{name}");
    }
    assert_eq!(BnConfig::preset("compacter"), Some(BnConfig::compacter()));
    assert_eq!(
        BnConfig::preset("compacter++"),
        Some(BnConfig::compacter_plus_plus())
    );
}

#[test]
fn bert_compacter_matches_adapterhub() {
    cases_match_reference::<BertModel>("compacter", BERT_CASES, TOLERANCE, &device());
}

#[test]
fn llama_compacter_matches_adapterhub() {
    cases_match_reference::<LlamaModel>("compacter", LLAMA_CASES, TOLERANCE, &device());
}

#[test]
fn gpt2_compacter_matches_adapterhub() {
    cases_match_reference::<Gpt2Model>("compacter", GPT2_CASES, TOLERANCE, &device());
}

#[test]
fn generation_with_compacter_matches_transformers() {
    let device = device();
    for (_, _, dir) in listed_cases::<LlamaModel>("compacter", LLAMA_CASES) {
        generates_as_reference::<LlamaModel>(&dir, &device);
    }
    for (_, _, dir) in listed_cases::<Gpt2Model>("compacter", GPT2_CASES) {
        generates_as_reference::<Gpt2Model>(&dir, &device);
    }
}

/// Rust-saved files reload the same; under `BURN_ADAPTERS_EXPORT_COMPACTER` they go to
/// `<dir>/bert/<case>` and `<dir>/decoder/<family>/<case>` for the Python checkers.
#[test]
fn rust_saved_compacters_reload_exactly() {
    let (_scratch, root) = export_root("BURN_ADAPTERS_EXPORT_COMPACTER");
    let device = device();
    rust_saved_cases_reload::<BertModel>("compacter", BERT_CASES, &root, &device);
    rust_saved_cases_reload::<LlamaModel>("compacter", LLAMA_CASES, &root, &device);
    rust_saved_cases_reload::<Gpt2Model>("compacter", GPT2_CASES, &root, &device);
}

/// Training moves the weights, biases and rules of the PHM projections; with `learn_phm` false
/// the rules stay where they started, even with the whole model unfrozen.
#[test]
fn training_moves_the_phm_layers_and_keeps_a_fixed_rule() {
    let device = Device::flex().autodiff();
    let base = || LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), &device);
    for (learn, parts) in [
        (true, &["weight.Factorized", "rule.Full", "bias"][..]),
        (false, &["weight.Factorized", "bias"][..]),
    ] {
        let mut model = base().unwrap();
        let config = format!(
            "compacter++[reduction_factor=8,shared_phm_rule=False,learn_phm={}]",
            if learn { "True" } else { "False" }
        );
        model
            .add_adapter("c", AdapterConfig::load(&config).unwrap())
            .unwrap();
        let rules_train = trainable(&model).iter().any(|p| p.contains(".rule."));
        assert_eq!(rules_train, learn, "{config} as added");
        model.train_adapter("c").unwrap();
        let before = snapshot(&model);
        let (model, losses) = train_steps(model, |m, input| m.forward(input), &device);
        assert!(losses.last() < losses.first(), "{config}: {losses:?}");
        let moved = moved(&before, &model);
        for path in &moved {
            assert!(path.contains(".c."), "{config}: {path} moved");
            assert!(learn || !path.contains(".rule."), "{config}: {path} moved");
        }
        for part in parts {
            assert!(moved.iter().any(|p| p.contains(part)), "{part}: {moved:?}");
        }
    }
    let mut model = base().unwrap();
    let config = "compacter[reduction_factor=8,shared_phm_rule=False,learn_phm=False]";
    model
        .add_adapter("c", AdapterConfig::load(config).unwrap())
        .unwrap();
    model.freeze_model(false);
    let trainable = trainable(&model);
    assert!(
        trainable
            .iter()
            .any(|p| p.contains(".c.") && p.contains(".weight."))
    );
    assert!(
        !trainable.iter().any(|p| p.contains(".rule.")),
        "{trainable:?}"
    );
}

/// Shared PHM parameters are parameters of the model (`shared_parameters.<name>`), not of each
/// layer: training moves them once for every layer, the trained adapter saves and reloads with
/// the same outputs, and deleting the adapter removes them.
#[test]
fn shared_phm_parameters_are_held_once_and_training_moves_them() {
    let device = Device::flex().autodiff();
    let mut model =
        LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), &device).unwrap();
    let config = "compacter[reduction_factor=8,phm_init_range=0.1,shared_W_phm=True]";
    model
        .add_adapter("c", AdapterConfig::load(config).unwrap())
        .unwrap();
    let shared: Vec<String> = snapshot(&model)
        .into_keys()
        .filter(|p| p.contains("rule") || p.contains("weight.") || p.contains("weights."))
        .filter(|p| p.contains(".c."))
        .collect();
    assert_eq!(
        shared,
        [
            "shared_parameters.c.rule.Full",
            "shared_parameters.c.weights.down.Factorized.left",
            "shared_parameters.c.weights.down.Factorized.right",
            "shared_parameters.c.weights.up.Factorized.left",
            "shared_parameters.c.weights.up.Factorized.right",
        ]
    );
    model.train_adapter("c").unwrap();
    let before = snapshot(&model);
    let (model, losses) = train_steps(model, |m, input| m.forward(input), &device);
    assert!(losses.last() < losses.first(), "{losses:?}");
    let moved = moved(&before, &model);
    assert!(shared.iter().all(|p| moved.contains(p)), "{moved:?}");
    assert!(moved.iter().all(|p| p.contains(".c.")), "{moved:?}");
    let scratch = tempfile::tempdir().unwrap();
    save_and_reload(&model, "c", scratch.path(), &device);
    let mut model = model;
    model.delete_adapter("c").unwrap();
    assert!(
        !snapshot(&model)
            .keys()
            .any(|p| p.contains("shared_parameters"))
    );
}

/// Sharing is equal values in every layer: a Compacter sharing its rule (and its whole weights)
/// on burn's `TransformerEncoder` (through the wrapper) computes what the same adapter computes
/// with the shared tensors copied into every PHM layer as its own.
#[test]
fn shared_phm_parameters_compute_as_copies_in_every_layer() {
    use burn::nn::transformer::TransformerEncoderConfig;
    use burn::tensor::{Distribution, Tensor};
    use burn_adapters::models::encoder::{AdapterTransformerEncoder, TransformerEncoderInput};
    let device = device();
    let encoder = TransformerEncoderConfig::new(16, 32, 4, 2)
        .with_dropout(0.0)
        .init(&device);
    let mut model = AdapterTransformerEncoder::from_encoder(encoder);
    let x = Tensor::<3>::random([2, 3, 16], Distribution::Normal(0.0, 1.0), &device);
    let forward =
        |model: &AdapterTransformerEncoder| model.forward(TransformerEncoderInput::new(x.clone()));
    let base = forward(&model);
    for (i, weights) in [false, true].into_iter().enumerate() {
        let [shared_name, own_name] = [format!("s{i}"), format!("own{i}")];
        let config = format!(
            "compacter[reduction_factor=2,phm_dim=2,phm_init_range=0.5,factorized_phm_W={},\
             shared_W_phm={}]",
            if weights { "False" } else { "True" },
            if weights { "True" } else { "False" },
        );
        model
            .add_adapter(&shared_name, AdapterConfig::load(&config).unwrap())
            .unwrap();
        model.set_active_adapters(shared_name.as_str()).unwrap();
        let shared = forward(&model);
        assert!(max_abs_diff_tensors(shared.clone(), base.clone()) > 1e-3);
        let dir = tempfile::tempdir().unwrap();
        model.save_adapter(dir.path(), &shared_name).unwrap();
        let copies = copy_shared_into_layers(dir.path(), &shared_name);
        assert_eq!(copies, 2 * 2 * 2, "{config}: layers × sites × projections");
        let config_file = dir.path().join("adapter_config.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&config_file).unwrap()).unwrap();
        json["config"]["shared_phm_rule"] = false.into();
        json["config"]["shared_W_phm"] = false.into();
        json.as_object_mut().unwrap().remove("weights_crc32");
        std::fs::write(&config_file, json.to_string()).unwrap();
        model.load_adapter_as(dir.path(), &own_name).unwrap();
        model.set_active_adapters(own_name.as_str()).unwrap();
        let d = max_abs_diff_tensors(forward(&model), shared);
        assert!(d <= 1e-7, "{config}: max |Δ| {d}");
    }
}

/// Rewrites the saved adapter `name` in `dir` so that each PHM layer holds the shared rule (and
/// whole weights, `W_down` / `W_up`) as its own; returns the number of layers.
fn copy_shared_into_layers(dir: &std::path::Path, name: &str) -> usize {
    let mut layers = 0;
    edit_safetensors(&dir.join("adapter.safetensors"), |tensors| {
        let tag = format!("shared_parameters.{name}.");
        let shared: Vec<_> = tensors
            .iter()
            .filter_map(|(key, shape, data)| {
                let key = key.strip_prefix(&tag)?;
                Some((key.to_string(), shape.clone(), data.clone()))
            })
            .collect();
        tensors.retain(|(key, ..)| !key.starts_with(&tag));
        let prefixes: Vec<String> = tensors
            .iter()
            .filter_map(|(key, ..)| key.strip_suffix(".b").map(str::to_string))
            .collect();
        for prefix in prefixes {
            let position = match prefix.contains("adapter_down") {
                true => "W_down",
                false => "W_up",
            };
            for (key, shape, data) in &shared {
                let own = match key.as_str() {
                    "phm_rule" => "phm_rule",
                    key if key == position => "W",
                    _ => continue,
                };
                tensors.push((format!("{prefix}.{own}"), shape.clone(), data.clone()));
            }
            layers += 1;
        }
    });
    layers
}

/// With `learn_phm` false a shared rule stays fixed, even with the whole model unfrozen.
/// AdapterHub 1.3.0's `train_adapter` makes every shared parameter trainable, this one too.
#[test]
fn a_fixed_shared_rule_never_trains() {
    let device = Device::flex().autodiff();
    let mut model =
        LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), &device).unwrap();
    let config = "compacter++[reduction_factor=8,learn_phm=False,factorized_phm_rule=True]";
    model
        .add_adapter("c", AdapterConfig::load(config).unwrap())
        .unwrap();
    for unfreeze in [false, true] {
        match unfreeze {
            false => model.train_adapter("c").unwrap(),
            true => model.freeze_model(false),
        }
        let trainable = trainable(&model);
        assert!(trainable.iter().any(|p| p.contains(".c.")));
        assert!(
            !trainable.iter().any(|p| p.contains("rule")),
            "{trainable:?}"
        );
    }
}

/// Averaging Compacters averages their shared rules linearly, as AdapterHub does.
#[test]
fn averaging_averages_shared_rules() {
    let device = device();
    let mut model = Gpt2Model::base(&device);
    // one config, two random starts
    let config = AdapterConfig::load("compacter[reduction_factor=8,phm_c_init=uniform]").unwrap();
    for name in ["a", "b"] {
        model.add_adapter(name, config.clone()).unwrap();
    }
    let sources = [("a", 0.25), ("b", 0.75)];
    model
        .average_adapter("avg", &sources, AverageStrategy::Linear)
        .unwrap();
    let shared = model.shared_parameters.phm();
    let rule = |name: &str| values(shared.get(name).unwrap().rule.as_ref().unwrap().value());
    let (a, b) = (rule("a"), rule("b"));
    let want: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(a, b)| 0.25 * f64::from(*a) + 0.75 * f64::from(*b))
        .collect();
    assert!(max_abs_diff(&rule("avg"), &want) <= 1e-6);
    assert!(a.iter().zip(&b).any(|(a, b)| a != b));
}

#[test]
fn bad_compacter_configs_are_errors_naming_the_field() {
    configs_refused_naming_the_field(&[
        ("compacter[shared_phm_rule=False,phm_dim=0]", "phm_dim"),
        ("compacter[shared_phm_rule=False,phm_rank=0]", "phm_rank"),
        (
            "compacter[shared_phm_rule=False,init_weights=houlsby]",
            "init_weights",
        ),
        (
            "compacter[shared_phm_rule=False,phm_init_range=-1]",
            "phm_init_range",
        ),
        (
            "compacter[shared_phm_rule=False,phm_c_init=zeros]",
            "phm_c_init",
        ),
    ]);
    // Weights shared across layers need one bottleneck width.
    let device = device();
    let mut bert = BertModel::base(&device);
    let config = r#"compacter[shared_W_phm=True,reduction_factor={"0": 8, "default": 4}]"#;
    let err = bert
        .add_adapter("c", AdapterConfig::load(config).unwrap())
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { field, .. } if field == "reduction_factor"),
        "{err}"
    );
    // AdapterHub keeps one set of shared parameters per adapter.
    let two = AdapterConfig::Union(vec![
        AdapterConfig::load("compacter[reduction_factor=8,mh_adapter=False]").unwrap(),
        AdapterConfig::load("compacter[reduction_factor=8,output_adapter=False]").unwrap(),
    ]);
    let err = bert.add_adapter("c", two).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    // the tiny BERT's width 32 / 32 leaves a bottleneck of 1, which phm_dim 4 cannot split
    let config = AdapterConfig::load("compacter[shared_phm_rule=False]").unwrap();
    let err = bert.add_adapter("c", config).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { field, .. } if field == "phm_dim"),
        "{err}"
    );
    assert!(!bert.has_adapter("c"));
}
