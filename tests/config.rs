//! Configs: presets equal the reference's, config strings and JSON parse, errors name the field.

mod common;

use burn_adapters::config::{ReductionFactor, Scaling};
use burn_adapters::prelude::*;
use common::fixtures;
use serde_json::Value;

fn fixture_config(case: &str) -> Value {
    let text =
        std::fs::read_to_string(fixtures().join("bn").join(case).join("adapter_config.json"))
            .unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["config"].clone()
}

#[test]
fn presets_serialise_exactly_as_the_reference() {
    // The fixtures were saved by AdapterHub from `<preset>[reduction_factor=8]`.
    for preset in ["seq_bn", "double_seq_bn", "par_bn", "scaled_par_bn"] {
        let ours = AdapterConfig::load(&format!("{preset}[reduction_factor=8]"))
            .unwrap()
            .to_json();
        assert_eq!(ours, fixture_config(preset), "{preset}");
    }
}

#[test]
fn preset_defaults_and_aliases() {
    assert_eq!(
        BnConfig::seq_bn().reduction_factor,
        ReductionFactor::Uniform(16.0)
    );
    assert_eq!(
        BnConfig::par_bn().reduction_factor,
        ReductionFactor::Uniform(2.0)
    );
    assert_eq!(BnConfig::par_bn().scaling, Scaling::Fixed(4.0));
    assert_eq!(BnConfig::scaled_par_bn().scaling, Scaling::Learned);
    for (alias, name) in [
        ("pfeiffer", "seq_bn"),
        ("houlsby", "double_seq_bn"),
        ("parallel", "par_bn"),
    ] {
        assert_eq!(
            AdapterConfig::load(alias).unwrap(),
            AdapterConfig::load(name).unwrap()
        );
    }
    // Python writes scaling as a float and integral reduction factors as integers.
    let json = AdapterConfig::load("par_bn").unwrap().to_json();
    assert_eq!(serde_json::to_string(&json["scaling"]).unwrap(), "4.0");
    assert_eq!(
        serde_json::to_string(&json["reduction_factor"]).unwrap(),
        "2"
    );
}

#[test]
fn config_strings_json_and_files() {
    let AdapterConfig::Bottleneck(bn) =
        AdapterConfig::load(r#"double_seq_bn[reduction_factor={"0": 4, "default": 16}, non_linearity="gelu", leave_out=[1], scaling=channel]"#)
            .unwrap()
    else {
        panic!("expected a bottleneck")
    };
    assert_eq!(bn.reduction_factor.for_layer(0).unwrap(), 4.0);
    assert_eq!(bn.reduction_factor.for_layer(7).unwrap(), 16.0);
    assert_eq!(bn.non_linearity, burn_adapters::config::Activation::Gelu);
    assert_eq!(bn.leave_out, vec![1]);
    assert_eq!(bn.scaling, Scaling::Channel);
    assert!(bn.mh_adapter);

    let json = AdapterConfig::load("seq_bn").unwrap().to_json().to_string();
    assert_eq!(
        AdapterConfig::load(&json).unwrap(),
        AdapterConfig::load("seq_bn").unwrap()
    );

    // a file: a full adapter_config.json
    let file = fixtures().join("bn/seq_bn_rf_map/adapter_config.json");
    let config = AdapterConfig::load(file.to_str().unwrap()).unwrap();
    assert_eq!(config.to_json(), fixture_config("seq_bn_rf_map"));
}

fn field_of(err: Error) -> String {
    match err {
        Error::InvalidConfig { field, .. } => field,
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

#[test]
fn invalid_values_name_their_field() {
    for (spec, field) in [
        ("seq_bn[reduction_factor=0]", "reduction_factor"),
        ("seq_bn[reduction_factor=-2]", "reduction_factor"),
        ("seq_bn[reduction_factor={x: 2}]", "reduction_factor.x"),
        ("seq_bn[non_linearity=softsign]", "non_linearity"),
        ("seq_bn[dropout=1.5]", "dropout"),
        ("seq_bn[stochastic_depth=-0.1]", "stochastic_depth"),
        ("seq_bn[init_weights=xavier]", "init_weights"),
        ("seq_bn[scaling=sometimes]", "scaling"),
        ("seq_bn[residual_before_ln=maybe]", "residual_before_ln"),
        (
            "double_seq_bn[residual_before_ln=post_add]",
            "residual_before_ln",
        ),
        ("seq_bn[leave_out=3]", "leave_out"),
        (
            "seq_bn[mh_adapter=False,output_adapter=False]",
            "mh_adapter/output_adapter",
        ),
        ("seq_bn[no_such_field=1]", "no_such_field"),
    ] {
        let err = AdapterConfig::load(spec).expect_err(spec);
        let message = err.to_string();
        let got = field_of(err);
        assert!(
            got.contains(field) || message.contains(field),
            "{spec}: field `{got}`, message {message}"
        );
    }
}

#[test]
fn unknown_unsupported_and_malformed_specs() {
    assert!(
        matches!(AdapterConfig::load("no_such_preset"), Err(Error::UnknownConfig(n)) if n == "no_such_preset")
    );
    assert!(matches!(
        AdapterConfig::load("seq_bn[cross_adapter=True]"),
        Err(Error::Unsupported(_))
    ));
    assert!(matches!(
        AdapterConfig::load("seq_bn[inv_adapter=nice]"),
        Err(Error::InvalidConfig { field, .. }) if field == "inv_adapter_reduction_factor"
    ));
    assert!(matches!(
        AdapterConfig::load("seq_bn[inv_adapter=real_nvp,inv_adapter_reduction_factor=2]"),
        Err(Error::InvalidConfig { field, .. }) if field == "inv_adapter"
    ));
    assert!(matches!(
        AdapterConfig::load("seq_bn|double_seq_bn"),
        Err(Error::InvalidConfig { .. })
    ));
    for bad in [
        "seq_bn[",
        "seq_bn[a]",
        "seq_bn[a=1,]",
        "seq_bn]",
        "|seq_bn",
        "seq_bn[a=\"x]",
    ] {
        assert!(
            matches!(AdapterConfig::load(bad), Err(Error::ConfigSyntax { .. })),
            "{bad}"
        );
    }
    assert!(matches!(
        AdapterConfig::load("{\"mh_adapter\": 3"),
        Err(Error::Json { .. })
    ));
}

#[test]
fn inapplicable_fields_round_trip_unchanged() {
    // PHM fields are kept verbatim, also where they do not apply (no `phm_layer`).
    let mut json = AdapterConfig::load("seq_bn").unwrap().to_json();
    json["phm_dim"] = 8.into();
    json["phm_c_init"] = "uniform".into();
    json["shared_W_phm"] = true.into();
    let config = AdapterConfig::from_json(&json).unwrap();
    assert_eq!(config.to_json(), json);
}

fn lora_fixture_config(case: &str) -> Value {
    let text = std::fs::read_to_string(
        fixtures()
            .join("lora")
            .join(case)
            .join("adapter_config.json"),
    )
    .unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["config"].clone()
}

#[test]
fn lora_ia3_and_union_configs_serialise_as_the_reference() {
    for (spec, case) in [
        ("lora[r=4,alpha=8]", "lora_qv"),
        (
            "lora[r=4,alpha=16,attn_matrices=[q,k,v],intermediate_lora=True,output_lora=True]",
            "lora_qkv_ffn",
        ),
        ("lora[r=4,alpha=8,use_gating=True]", "lora_gating"),
        ("ia3", "ia3"),
        ("ia3[output_lora=True]", "ia3_with_output"),
        (
            "seq_bn[reduction_factor=8]|lora[r=4,alpha=8]",
            "union_seq_bn_lora",
        ),
    ] {
        let ours = AdapterConfig::load(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        let reference = lora_fixture_config(case);
        assert_eq!(ours.to_json(), reference, "{spec}");
        assert_eq!(
            AdapterConfig::from_json(&reference).unwrap(),
            ours,
            "{case}"
        );
    }
    let lora = AdapterConfig::load("lora").unwrap();
    assert_eq!(lora.lora().unwrap().r, 8);
    assert_eq!(
        lora.architecture(),
        burn_adapters::config::Architecture::Lora
    );
}

#[test]
fn lora_values_are_validated_and_models_take_them() {
    for (spec, field) in [
        ("lora[r=0]", "r"),
        ("ia3[r=2]", "r"),
        ("ia3[dropout=0.1]", "dropout"),
        ("lora[attn_matrices=[q,x]]", "attn_matrices"),
        ("lora[alpha=inf]", "alpha"),
        ("lora[composition_mode=multiply]", "composition_mode"),
        ("lora[vera_d=0.1]", "vera_b"),
    ] {
        let err = AdapterConfig::load(spec).expect_err(spec);
        assert!(err.to_string().contains(field), "{spec}: {err}");
    }
    assert!(matches!(
        AdapterConfig::load("seq_bn[cross_adapter=True]"),
        Err(Error::Unsupported(_))
    ));

    use burn_adapters::models::bert::BertConfig;
    let mut model = BertConfig::tiny().init(&common::device()).unwrap();
    for (i, spec) in ["lora", "ia3", "seq_bn|lora"].into_iter().enumerate() {
        model
            .add_adapter(&format!("x{i}"), AdapterConfig::load(spec).unwrap())
            .unwrap_or_else(|e| panic!("{spec}: {e}"));
    }
    assert_eq!(model.adapter_names(), ["x0", "x1", "x2"]);
}
