//! The defects a full review of wave 1 found, one test each (every one failed before its fix),
//! and the calls a crate depending on this one expects to work.

mod common;

use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::transformer::{TransformerEncoderConfig, TransformerEncoderInput as BurnInput};
use burn::tensor::{Device, Distribution, Int, Tensor};
use burn_adapters::config::LoRAConfig;
use burn_adapters::heads::HeadConfig;
use burn_adapters::models::bert::{BertConfig, BertInput, BertModel};
use burn_adapters::models::encoder::{
    AdapterTransformerEncoder, AdapterTransformerEncoderConfig, TransformerEncoderInput,
};
use burn_adapters::prelude::*;
use common::snapshot::{ModelState, snapshot, trainable};
use common::*;

/// A tiny BERT with bottleneck adapters `a`, `b`, `c`.
fn three_adapters(device: &Device) -> BertModel {
    let mut model = BertConfig::tiny().init(device).unwrap();
    for name in ["a", "b", "c"] {
        model.add_adapter(name, BnConfig::seq_bn()).unwrap();
    }
    model
}

fn dynamic() -> burn_adapters::config::FusionConfig {
    burn_adapters::config::FusionConfig::dynamic_fusion()
}

#[test]
fn deleting_a_fusion_deactivates_a_nested_fuse_that_runs_it() {
    // The check searched the setup's text for `Fuse[b, c]`, which `Fuse[Stack[a, b], c]` does
    // not contain: the setup stayed active and then silently did nothing at the fused sites.
    let mut model = three_adapters(&device());
    model.add_adapter_fusion("b,c", dynamic()).unwrap();
    model.set_active_adapters("Fuse[Stack[a, b], c]").unwrap();
    model.delete_adapter_fusion("Fuse[b, c]").unwrap();
    assert_eq!(model.active_adapters(), None);
    assert_eq!(model.registry().fusions().count(), 0);
    // A setup that does not run the deleted fusion stays active.
    model.add_adapter_fusion("a,b", dynamic()).unwrap();
    model.add_adapter_fusion("b,c", dynamic()).unwrap();
    model.set_active_adapters("Stack[c, Fuse[a, b]]").unwrap();
    model.delete_adapter_fusion("b,c").unwrap();
    assert_eq!(
        model.active_adapters().map(ToString::to_string).as_deref(),
        Some("Stack[c, Fuse[a, b]]")
    );
}

#[test]
fn a_nested_fuse_uses_the_fusion_adapterhub_names_it_by() {
    // AdapterHub's `Fuse.name` of Fuse[Stack[a, b], c] is "b,c" (each child's last adapter);
    // this crate built and saved a layer "a,b,c" that AdapterHub would never look up.
    let device = device();
    let mut model = three_adapters(&device);
    model
        .add_adapter_fusion("Fuse[Stack[a, b], c]", dynamic())
        .unwrap();
    let keys: Vec<String> = model
        .registry()
        .fusions()
        .map(ToString::to_string)
        .collect();
    assert_eq!(keys, ["b,c"]);
    assert!(matches!(
        model.add_adapter_fusion("Fuse[b, c]", dynamic()),
        Err(Error::DuplicateFusion(key)) if key == "b,c"
    ));
    model.set_active_adapters("Fuse[Stack[a, b], c]").unwrap();
    let nested = values(model.forward(fixture_inputs(&device)).last_hidden_state);
    model.set_active_adapters("Fuse[b, c]").unwrap();
    let flat = values(model.forward(fixture_inputs(&device)).last_hidden_state);
    assert_ne!(nested, flat, "the Stack child runs `a` before `b`");

    let dir = tempfile::tempdir().unwrap();
    model.save_adapter_fusion(dir.path(), "b,c").unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapter_fusion_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["name"], "b,c");
    assert_eq!(config["adapter_names"], serde_json::json!(["b", "c"]));
}

#[test]
fn train_head_trains_the_head_alone_and_says_so() {
    // train_head unfroze the adapter of the head's name but recorded no trainable adapter, so
    // adapter_summary reported it frozen while it trained.
    let mut model = BertConfig::tiny().init(&device().autodiff()).unwrap();
    model.add_adapter("t", BnConfig::seq_bn()).unwrap();
    model.add_head("t", HeadConfig::classification(2)).unwrap();
    model.train_head("t").unwrap();
    let training = trainable(&model);
    assert!(!training.is_empty());
    assert!(
        training.iter().all(|path| path.starts_with("heads.t.")),
        "{training:?}"
    );
    let row = &model.adapter_summary().adapters[0];
    assert!(!row.trainable);
}

#[test]
fn an_ia3_merge_that_could_not_be_undone_is_refused() {
    // reset_adapter divides by l·alpha: with a zero entry the restored weights were NaN/inf.
    let device = device();
    for (name, config) in [
        ("zero_l", "ia3[init_weights=lora]"),
        ("zero_alpha", "ia3[alpha=0]"),
    ] {
        let mut model = BertConfig::tiny().init(&device).unwrap();
        model
            .add_adapter(name, AdapterConfig::load(config).unwrap())
            .unwrap();
        let before = ModelState::of(&model);
        let error = model.merge_adapter(name).unwrap_err();
        assert!(
            matches!(&error, Error::NotMergeable { reason, .. } if reason.contains("l·alpha is 0")),
            "{error}"
        );
        before.assert_unchanged(&ModelState::of(&model), &error);
    }
}

/// The error of loading the fixture BERT with `config.json`'s `key` set to `value`.
fn load_base_with(key: &str, value: &str) -> Error {
    let (_tmp, dir) = copy_fixture("base");
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config[key] = value.into();
    std::fs::write(&path, config.to_string()).unwrap();
    BertModel::from_pretrained(&dir, &device()).unwrap_err()
}

#[test]
fn an_unknown_hidden_act_is_an_error() {
    // A config holding an activation BertModel did not know built a model with GELU instead
    // (only `from_file` checked the name); the activation is now typed, so such a config does
    // not come into being.
    let mut json = serde_json::to_value(BertConfig::tiny()).unwrap();
    json["hidden_act"] = "wiggle".into();
    let error = serde_json::from_value::<BertConfig>(json.clone()).unwrap_err();
    assert!(error.to_string().contains("wiggle"), "{error}");
    json["hidden_act"] = "gelu_new".into();
    let config: BertConfig = serde_json::from_value(json).unwrap();
    assert_eq!(
        config.hidden_act,
        burn_adapters::config::Activation::GeluNew
    );
    let error = load_base_with("hidden_act", "wiggle");
    assert!(
        matches!(&error, Error::Json { field, .. } if field == "hidden_act"),
        "{error}"
    );
}

#[test]
fn other_model_types_are_refused() {
    // A RoBERTa directory loaded as BERT and gave wrong outputs (max |Δ| 2.8 on a tiny one).
    let error = load_base_with("model_type", "roberta");
    assert!(
        matches!(&error, Error::Json { field, .. } if field == "model_type"),
        "{error}"
    );
}

#[test]
fn hosts_record_their_own_identity_in_saved_files() {
    // Every host's adapters were labelled "bert"/"BertModel" through a BERT default.
    let device = device();
    let mut encoder =
        AdapterTransformerEncoderConfig::new(TransformerEncoderConfig::new(32, 64, 4, 2))
            .init(&device)
            .unwrap();
    encoder.add_adapter("x", BnConfig::seq_bn()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    encoder.save_adapter(dir.path(), "x").unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["model_type"], serde_json::Value::Null);
    assert_eq!(config["model_class"], serde_json::Value::Null);
    // BERT still says what it is.
    let mut bert = base_model(&device);
    bert.add_adapter("x", BnConfig::seq_bn()).unwrap();
    bert.save_adapter(dir.path(), "x").unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["model_type"], "bert");
    assert_eq!(config["model_class"], "BertModel");
}

#[test]
fn split_parallel_refuses_an_output_that_does_not_divide() {
    // It returned the tensor unsplit.
    let device = device();
    let mut model = three_adapters(&device);
    model.set_active_adapters("Parallel[a, b]").unwrap();
    let odd = Tensor::<2>::zeros([3, 4], &device);
    assert!(matches!(
        model.split_parallel(odd),
        Err(Error::InvalidInput { input, .. }) if input == "output"
    ));
    let out = model.forward(fixture_inputs(&device)).last_hidden_state;
    assert_eq!(model.split_parallel(out).unwrap().len(), 2);
}

#[test]
fn inputs_the_model_cannot_run_are_errors_not_panics() {
    // 5,000 tokens panicked inside burn-flex (an out-of-bounds gather).
    let device = device();
    let model = base_model(&device);
    let ids = |batch: usize, seq: usize, id: i64| Tensor::<2, Int>::full([batch, seq], id, &device);
    let max = model.config().max_position_embeddings;
    let cases = [
        (
            "input_ids",
            BertInput::new(ids(1, max + 1, 5), ids(1, max + 1, 1)),
        ),
        (
            "input_ids",
            BertInput::new(ids(1, 5000, 5), ids(1, 5000, 1)),
        ),
        ("input_ids", BertInput::new(ids(2, 3, 99), ids(2, 3, 1))),
        ("input_ids", BertInput::new(ids(2, 3, -1), ids(2, 3, 1))),
        ("input_ids", BertInput::new(ids(0, 3, 1), ids(0, 3, 1))),
        ("attention_mask", BertInput::new(ids(2, 3, 5), ids(2, 4, 1))),
        (
            "token_type_ids",
            BertInput {
                token_type_ids: Some(ids(2, 3, 2)),
                ..BertInput::new(ids(2, 3, 5), ids(2, 3, 1))
            },
        ),
    ];
    for (field, input) in cases {
        match model.try_forward(input.clone()) {
            Err(Error::InvalidInput { input, .. }) => assert_eq!(input, field),
            other => panic!("{field}: expected InvalidInput, got {other:?}"),
        }
    }
    // The longest sequence the model has positions for runs.
    let fits = BertInput::new(ids(1, max, 98), ids(1, max, 1));
    assert_eq!(
        model.try_forward(fits).unwrap().last_hidden_state.dims(),
        [1, max, 32]
    );
}

#[test]
fn bert_config_init_checks_the_config() {
    let device = device();
    let bad = BertConfig {
        num_attention_heads: 5,
        ..BertConfig::tiny()
    };
    assert!(matches!(
        bad.init(&device),
        Err(Error::InvalidConfig { field, .. }) if field == "num_attention_heads"
    ));
    let bad = BertConfig {
        hidden_dropout_prob: 1.0,
        ..BertConfig::tiny()
    };
    assert!(matches!(
        bad.init(&device),
        Err(Error::InvalidConfig { field, .. }) if field == "hidden_dropout_prob"
    ));
    let bad = AdapterTransformerEncoderConfig::new(TransformerEncoderConfig::new(30, 64, 4, 2));
    assert!(matches!(
        bad.init(&device),
        Err(Error::InvalidConfig { field, .. }) if field == "n_heads"
    ));
}

#[test]
fn setup_text_is_parsed_where_a_setup_is_taken() {
    // "Stack[a, b]" was taken as one adapter name and refused for its '['.
    let device = device();
    let mut model = three_adapters(&device);
    model.set_active_adapters("Stack[a, b]").unwrap();
    assert_eq!(
        model.active_adapters(),
        Some(&AdapterSetup::stack(["a", "b"]))
    );
    model.set_active_adapters("c").unwrap();
    assert_eq!(
        model.active_adapters(),
        Some(&AdapterSetup::Name("c".into()))
    );
    // Errors in the text speak of a setup.
    let error = model.set_active_adapters("Stack[a, b").unwrap_err();
    assert!(matches!(error, Error::SetupSyntax { .. }), "{error}");
    assert!(error.to_string().contains("adapter setup"), "{error}");
}

#[test]
fn training_without_autodiff_is_an_error() {
    // train_adapter returned Ok, and burn then panicked in `backward`.
    let mut model = three_adapters(&device());
    model.add_adapter_fusion("a,b", dynamic()).unwrap();
    model.add_head("a", HeadConfig::classification(2)).unwrap();
    let before = ModelState::of(&model);
    assert!(matches!(model.train_adapter("a"), Err(Error::NoAutodiff)));
    assert!(matches!(
        model.train_adapter_fusion("Fuse[a, b]", false),
        Err(Error::NoAutodiff)
    ));
    assert!(matches!(model.train_head("a"), Err(Error::NoAutodiff)));
    before.assert_unchanged(&ModelState::of(&model), &"training calls");
    assert!(Error::NoAutodiff.to_string().contains("device.autodiff()"));
}

#[test]
fn the_encoder_wrapper_is_a_drop_in_for_burns_encoder() {
    // It took no attention mask (so no causal use) and needed a template to give burn's
    // encoder back.
    let device = device();
    device.seed(21);
    let config = TransformerEncoderConfig::new(32, 64, 4, 2).with_dropout(0.0);
    let encoder = config.init(&device);
    let x = Tensor::<3>::random([2, 5, 32], Distribution::Normal(0.0, 1.0), &device);
    let causal = generate_autoregressive_mask(2, 5, &device);
    let want = values(encoder.forward(BurnInput::new(x.clone()).mask_attn(causal.clone())));
    let params = snapshot(&encoder);
    let mut model = AdapterTransformerEncoder::from_encoder(encoder);
    let input = || TransformerEncoderInput::new(x.clone()).mask_attn(causal.clone());
    assert_eq!(values(model.try_forward(input()).unwrap()), want);
    model
        .add_adapter(
            "lora",
            LoRAConfig {
                init_weights: burn_adapters::config::LoRAInit::Bert,
                ..LoRAConfig::lora()
            },
        )
        .unwrap();
    model.set_active_adapters("lora").unwrap();
    assert_ne!(values(model.forward(input())), want);
    // A wrong width is an error, not a panic inside burn.
    let narrow = TransformerEncoderInput::new(Tensor::zeros([2, 5, 31], &device));
    assert!(matches!(
        model.try_forward(narrow),
        Err(Error::InvalidInput { input, .. }) if input == "tensor"
    ));
    let back = model.into_encoder();
    assert_eq!(snapshot(&back), params);
    assert_eq!((back.d_ff, back.n_heads, back.n_layers), (64, 4, 2));
    assert_eq!(
        values(back.forward(BurnInput::new(x).mask_attn(causal))),
        want
    );
}

#[test]
#[should_panic(expected = "non-finite")]
fn comparisons_fail_on_nan() {
    // `f64::max` drops NaN, so a NaN output compared as a perfect match.
    max_abs_diff(&[0.5, f32::NAN], &[0.5, 0.0]);
}

/// On a training device, before `train_adapter` froze the base (its weights still require
/// gradients), merging a LoRA panicked in burn ("non leaf tensor": `detach` keeps
/// `require_grad`), and an SVD average panicked (burn's SVD has no autodiff op).
#[test]
fn merging_and_svd_averaging_work_on_a_training_device() {
    let device = device().autodiff();
    let mut model = BertConfig::tiny().init(&device).unwrap();
    let config = AdapterConfig::load("lora[init_weights=bert,init_weights_seed=1]").unwrap();
    model.add_adapter("l", config).unwrap();
    model.set_active_adapters("l").unwrap();
    model.merge_adapter("l").unwrap();
    model.reset_adapter();
    let strategy = burn_adapters::model::AverageStrategy::LoraDeltaWSvd { rank: 4 };
    model
        .average_adapter("avg", &[("l", 0.5), ("l", 0.5)], strategy)
        .unwrap();
}
