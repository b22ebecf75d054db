//! The bad-input suite: every public fallible function gets wrong names, out-of-range values,
//! NaN/inf, empty and huge inputs, and answers with the right typed error. Calls on a model must
//! leave it exactly as it was: every tensor, every trainable flag, the adapters, heads, fusions and
//! the active setup.

mod common;

use burn::tensor::{Int, Tensor};
use burn_adapters::backend::device_by_name;
use burn_adapters::config::Activation;
use burn_adapters::config::{FusionConfig, LoRAConfig};
use burn_adapters::heads::HeadConfig;
use burn_adapters::model::AverageStrategy;
use burn_adapters::models::bert::{BertConfig, BertInput, BertModel};
use burn_adapters::prelude::*;
use common::snapshot::ModelState;
use common::*;

/// Asserts `$call` fails with an error matching `$pattern`, and counts the case.
macro_rules! bad {
    ($count:ident, $call:expr, $pattern:pat $(if $guard:expr)?) => {{
        $count += 1;
        match $call {
            Ok(_) => panic!("`{}` succeeded (case {})", stringify!($call), $count),
            Err(error) => {
                let mut shown = format!("{error:?}");
                shown.truncate(600);
                assert!(
                    matches!(&error, $pattern $(if $guard)?),
                    "`{}` gave the wrong error: {shown}",
                    stringify!($call)
                );
                assert!(error.to_string().len() < 2000, "a long error message: {shown}");
            }
        }
    }};
}

fn field_is(error: &Error, name: &str) -> bool {
    match error {
        Error::InvalidConfig { field, .. } | Error::Json { field, .. } => field.contains(name),
        _ => false,
    }
}

#[test]
fn config_strings_json_and_files() {
    let mut n = 0;
    for spec in ["", "   ", "nope", "pfeiffer2", "seq_bn]"] {
        bad!(
            n,
            AdapterConfig::load(spec),
            Error::UnknownConfig(_) | Error::ConfigSyntax { .. }
        );
    }
    for spec in [
        "seq_bn[",
        "seq_bn[reduction_factor=]",
        "seq_bn[reduction_factor=16",
        "seq_bn[=16]",
        "seq_bn[reduction_factor=16,reduction_factor=8]",
        "seq_bn|",
        "|seq_bn",
        "seq_bn[non_linearity='relu]",
    ] {
        bad!(n, AdapterConfig::load(spec), Error::ConfigSyntax { .. });
    }
    let out_of_range = [
        ("seq_bn[reduction_factor=0]", "reduction_factor"),
        ("seq_bn[reduction_factor=-1]", "reduction_factor"),
        ("seq_bn[reduction_factor=nan]", "reduction_factor"),
        ("seq_bn[reduction_factor=inf]", "reduction_factor"),
        ("seq_bn[reduction_factor=-inf]", "reduction_factor"),
        ("seq_bn[reduction_factor=1e999]", "reduction_factor"),
        ("seq_bn[reduction_factor='16']", "reduction_factor"),
        ("seq_bn[dropout=1.5]", "dropout"),
        ("seq_bn[dropout=nan]", "dropout"),
        ("seq_bn[scaling=inf]", "scaling"),
        ("seq_bn[scaling=nan]", "scaling"),
        ("seq_bn[scaling=sometimes]", "scaling"),
        ("seq_bn[non_linearity=wiggle]", "non_linearity"),
        ("seq_bn[leave_out=[-1]]", "leave_out"),
        ("seq_bn[leave_out=3]", "leave_out"),
        ("seq_bn[no_such_field=1]", "no_such_field"),
        ("seq_bn[init_weights=zeros]", "init_weights"),
        ("lora[r=0]", "r"),
        ("lora[r=-3]", "r"),
        ("lora[alpha=nan]", "alpha"),
        ("lora[alpha=inf]", "alpha"),
        ("lora[dropout=2]", "dropout"),
        ("lora[composition_mode=mul]", "composition_mode"),
        ("lora[init_weights=zeros]", "init_weights"),
        ("lora[attn_matrices=['x']]", "attn_matrices"),
    ];
    for (spec, field) in out_of_range {
        bad!(n, AdapterConfig::load(spec), e if field_is(e, field));
    }
    // unsupported methods and combinations parse but are refused with their name
    for spec in ["lora[use_dora=True,use_gating=True]", "lora[vera_d=0.1]"] {
        bad!(
            n,
            AdapterConfig::load(spec),
            Error::Unsupported(_) | Error::InvalidConfig { .. }
        );
    }
    // nesting deep enough to overflow a recursive parser, and huge inputs
    let deep = format!("seq_bn[leave_out={}]", "[".repeat(100_000));
    bad!(n, AdapterConfig::load(&deep), Error::ConfigSyntax { reason, .. } if reason.contains("nested"));
    let deep_json = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    bad!(
        n,
        AdapterConfig::load(&deep_json),
        Error::ConfigSyntax { .. }
    );
    let deep_object = format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
    bad!(n, AdapterConfig::load(&deep_object), Error::Json { .. });
    let huge_name = "x".repeat(1 << 20);
    bad!(n, AdapterConfig::load(&huge_name), Error::UnknownConfig(_));
    let huge_list = format!("seq_bn[leave_out=[{}]]", vec!["1"; 100_000].join(","));
    assert!(
        AdapterConfig::load(&huge_list).is_ok(),
        "a long but valid list parses"
    );
    // JSON of the wrong shape
    for json in [
        "{}",
        r#"{"architecture": 5}"#,
        r#"{"architecture": "bottleneck", "reduction_factor": "x"}"#,
        r#"{"architecture": "lora", "r": -1}"#,
        r#"{"architecture": "union", "configs": "seq_bn"}"#,
        r#"{"architecture": "union", "configs": []}"#,
        "[1, 2]",
        "null",
    ] {
        bad!(
            n,
            AdapterConfig::load(json),
            Error::Json { .. }
                | Error::InvalidConfig { .. }
                | Error::ConfigSyntax { .. }
                | Error::UnknownConfig(_)
        );
    }
    // files: missing, a directory, empty, not UTF-8, not JSON, huge but empty of content
    let tmp = tempfile::tempdir().unwrap();
    bad!(
        n,
        AdapterConfig::from_file(tmp.path().join("missing.json")),
        Error::Io { .. }
    );
    bad!(n, AdapterConfig::from_file(tmp.path()), Error::Io { .. });
    for (name, bytes) in [
        ("empty.json", Vec::new()),
        ("latin1.json", vec![b'{', 0xE9, b'}']),
        ("text.json", b"seq_bn".to_vec()),
        ("spaces.json", vec![b' '; 4 << 20]),
    ] {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        bad!(n, AdapterConfig::from_file(&path), Error::Json { path: p, .. } | Error::Io { path: p, .. } if p == &path);
    }

    // fusion configs
    for spec in [
        "",
        "nope",
        r#"{"key": 1}"#,
        r#"{"key": true, "query": "yes"}"#,
    ] {
        bad!(
            n,
            FusionConfig::load(spec),
            Error::UnknownConfig(_) | Error::Json { .. } | Error::InvalidConfig { .. }
        );
    }
    let fusion_json = |key: &str, value: serde_json::Value| {
        let mut json = serde_json::to_value(FusionConfig::dynamic_fusion()).unwrap();
        json[key] = value;
        json.to_string()
    };
    bad!(
        n,
        FusionConfig::load(&fusion_json("temperature", true.into())),
        Error::Unsupported(_)
    );
    bad!(n, FusionConfig::load(&fusion_json("dropout_prob", 1.5.into())), e if field_is(e, "dropout_prob"));
    bad!(n, FusionConfig::load(&fusion_json("residual_before", "yes".into())), e if field_is(e, "residual_before"));

    // head configs
    let bad_heads = [
        (HeadConfig::classification(0), "num_labels"),
        (HeadConfig::tagging(0), "num_labels"),
    ];
    for (head, field) in bad_heads {
        bad!(n, head.validate(), e if field_is(e, field));
    }
    for json in [
        r#"{"head_type": "classification", "num_labels": 2, "layers": 0, "activation_function": "tanh", "label2id": null, "use_pooler": false, "bias": true, "dropout_prob": null}"#,
        r#"{"head_type": "classification", "num_labels": 2, "layers": 2, "activation_function": "wiggle", "label2id": null, "use_pooler": false, "bias": true, "dropout_prob": null}"#,
        r#"{"head_type": "tagging", "num_labels": 2, "layers": 1, "activation_function": null, "label2id": null, "dropout_prob": 1.0}"#,
        r#"{"head_type": "tagging", "num_labels": 2, "layers": 1, "activation_function": null, "label2id": null, "dropout_prob": "NaN"}"#,
    ] {
        let head: std::result::Result<HeadConfig, _> = serde_json::from_str(json);
        match head {
            Ok(head) => bad!(n, head.validate(), Error::InvalidConfig { .. }),
            Err(_) => n += 1, // refused by the schema already
        }
    }
    bad!(
        n,
        "wiggle".parse::<Activation>(),
        Error::InvalidConfig { .. }
    );
    bad!(n, "".parse::<Activation>(), Error::InvalidConfig { .. });
    bad!(
        n,
        device_by_name("quantum"),
        Error::InvalidConfig { .. } | Error::Unsupported(_)
    );
    let mut lora = LoRAConfig::lora();
    lora.r = 0;
    bad!(n, lora.validate(), e if field_is(e, "r"));
    lora.r = 8;
    lora.alpha = f64::NAN;
    bad!(n, lora.validate(), e if field_is(e, "alpha"));

    // configs from model files
    bad!(
        n,
        BertConfig::from_file(tmp.path().join("missing.json")),
        Error::Io { .. }
    );
    let bert = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("base/config.json")).unwrap(),
        )
        .unwrap();
        edit(&mut json);
        let path = tmp.path().join("config.json");
        std::fs::write(&path, json.to_string()).unwrap();
        BertConfig::from_file(&path)
    };
    bad!(n, bert(&|j| j["hidden_size"] = 30.into()), e if field_is(e, "hidden_size") || field_is(e, "num_attention_heads"));
    bad!(n, bert(&|j| j["num_attention_heads"] = 0.into()), e if field_is(e, "num_attention_heads"));
    bad!(n, bert(&|j| j["hidden_size"] = (-32).into()), e if field_is(e, "hidden_size"));
    bad!(n, bert(&|j| j["num_hidden_layers"] = "two".into()), e if field_is(e, "num_hidden_layers"));
    bad!(n, bert(&|j| j["layer_norm_eps"] = (-1.0).into()), e if field_is(e, "layer_norm_eps"));
    bad!(n, bert(&|j| j["layer_norm_eps"] = 0.into()), e if field_is(e, "layer_norm_eps"));
    bad!(n, bert(&|j| j["hidden_dropout_prob"] = 1.into()), e if field_is(e, "hidden_dropout_prob"));
    bad!(n, bert(&|j| j["vocab_size"] = 0.into()), e if field_is(e, "vocab_size"));
    bad!(n, bert(&|j| j["hidden_act"] = "wiggle".into()), e if field_is(e, "hidden_act"));
    eprintln!("config cases: {n}");
    assert_eq!(n, 86);
}

#[test]
fn setup_text() {
    let mut n = 0;
    for text in [
        "",
        "[",
        "Stack[",
        "Stack[]",
        "Stack[a,]",
        "Stack[a b]",
        "Nope[a]",
        "Stack[a](weights=1)",
        "Split[a, b](splits=1)",
        "Split[a, b](splits=x,y)",
        "Split[a, b]",
        "BatchSplit[a, b]",
        "BatchSplit[a, b](batch_sizes=-1,2)",
        "Average[a, b](weights=nan,1)",
        "Average[a, b](weights=inf,1)",
        "Average[a, b](weights=1,-1)",
        "Average[a, b](weights=1)",
        "Average[a, b](normalize_weights=maybe)",
        "Fuse[a]",
        "Fuse[a, Parallel[b, c]]",
        "Parallel[a, Parallel[b, c]]",
        "PerRow[]",
        "PerRow[a, (]",
        "a.b",
        "Stack[a, b] c",
    ] {
        bad!(
            n,
            AdapterSetup::parse(text),
            Error::SetupSyntax { .. } | Error::InvalidSetup(_) | Error::InvalidName { .. }
        );
    }
    let deep = format!("{}a{}", "Split[".repeat(100_000), "]".repeat(100_000));
    bad!(n, AdapterSetup::parse(&deep), Error::SetupSyntax { reason, .. } if reason.contains("nested"));
    let wide = format!("Stack[{}]", vec!["a"; 100_000].join(", "));
    assert!(
        AdapterSetup::parse(&wide).is_ok(),
        "a wide but shallow setup parses"
    );
    eprintln!("setup text cases: {n}");
    assert_eq!(n, 26);
}

/// A tiny model with two bottleneck adapters, a LoRA, a head, a fusion, and a trained setup.
fn populated() -> BertModel {
    let mut model = base_model(&device().autodiff());
    let bn = AdapterConfig::load("seq_bn[reduction_factor=8]").unwrap();
    model.add_adapter("a", bn.clone()).unwrap();
    model.add_adapter("b", bn).unwrap();
    model
        .add_adapter("l", AdapterConfig::load("lora[r=4]").unwrap())
        .unwrap();
    model.add_head("a", HeadConfig::classification(2)).unwrap();
    model
        .add_adapter_fusion(
            AdapterSetup::parse("Fuse[a, b]").unwrap(),
            FusionConfig::dynamic_fusion(),
        )
        .unwrap();
    model
        .train_adapter(AdapterSetup::parse("Stack[l, a]").unwrap())
        .unwrap();
    model
}

/// Runs `call` on the model, expects an error, and checks that nothing about the model changed.
fn unchanged<T>(
    model: &mut BertModel,
    call: impl FnOnce(&mut BertModel) -> Result<T>,
) -> Result<T> {
    let before = ModelState::of(model);
    let result = call(model);
    if let Err(error) = &result {
        before.assert_unchanged(&ModelState::of(model), error);
    }
    result
}

#[test]
fn model_calls_fail_without_changing_the_model() {
    let mut n = 0;
    let mut model = populated();
    let start = ModelState::of(&model);
    let m = &mut model;
    let bn = || AdapterConfig::load("seq_bn").unwrap();
    let setup = |t: &str| AdapterSetup::parse(t).unwrap();

    // add_adapter: names, duplicates, configs this model cannot take
    let long_name = "n".repeat(100_000);
    for name in [
        "",
        "a.b",
        "x y",
        "a[0]",
        "p|q",
        "a,b",
        "ä/ö",
        long_name.as_str(),
    ] {
        bad!(
            n,
            unchanged(m, |m| m.add_adapter(name, bn())),
            Error::InvalidName { .. }
        );
    }
    bad!(n, unchanged(m, |m| m.add_adapter("a", bn())), Error::DuplicateAdapter(x) if x == "a");
    for spec in [
        "seq_bn[leave_out=[2]]",
        "seq_bn[leave_out=[0, 99]]",
        "seq_bn[reduction_factor=0.001]",
        "seq_bn[reduction_factor={'5': 2}]",
        "lora[leave_out=[7]]",
    ] {
        bad!(
            n,
            unchanged(m, |m| m
                .add_adapter("c", AdapterConfig::load(spec).unwrap())),
            Error::InvalidConfig { .. }
        );
    }
    let mut lora = LoRAConfig::lora();
    lora.r = 0;
    bad!(n, unchanged(m, |m| m.add_adapter("c", lora)), e if field_is(e, "r"));

    // names that do not exist
    bad!(
        n,
        unchanged(m, |m| m.delete_adapter("zz")),
        Error::UnknownAdapter(_)
    );
    bad!(
        n,
        unchanged(m, |m| m.delete_adapter("")),
        Error::UnknownAdapter(_) | Error::InvalidName { .. }
    );
    bad!(n, m.adapter_config("zz"), Error::UnknownAdapter(_));
    bad!(
        n,
        unchanged(m, |m| m.train_adapter("zz")),
        Error::UnknownAdapter(_)
    );
    bad!(
        n,
        unchanged(m, |m| m.train_adapter(setup("Stack[a, zz]"))),
        Error::UnknownAdapter(_)
    );
    bad!(
        n,
        unchanged(m, |m| m.train_head("zz")),
        Error::UnknownHead(_)
    );
    bad!(
        n,
        unchanged(m, |m| m.delete_head("zz")),
        Error::UnknownHead(_)
    );
    bad!(n, m.head("zz"), Error::UnknownHead(_));
    bad!(
        n,
        unchanged(m, |m| m.merge_adapter("zz")),
        Error::UnknownAdapter(_)
    );
    bad!(n, unchanged(m, |m| m.merge_adapter("a")), Error::NotMergeable { name, .. } if name == "a");

    // setups that name unknown adapters, misuse blocks, or break the nesting rules
    for text in [
        "zz",
        "Stack[a, zz]",
        "Fuse[a, zz]",
        "Fuse[b, l]",
        "Parallel[a, zz]",
        "Stack[Fuse[b, a], l]",
        "Average[a, zz](weights=0.5,0.5)",
        "PerRow[a, zz]",
    ] {
        bad!(
            n,
            unchanged(m, |m| m.set_active_adapters(setup(text))),
            Error::UnknownAdapter(_) | Error::InvalidSetup(_) | Error::UnknownFusion(_)
        );
    }
    let programmatic = [
        AdapterSetup::Stack(vec![]),
        AdapterSetup::Average {
            children: vec![
                AdapterSetup::Name("a".into()),
                AdapterSetup::Name("b".into()),
            ],
            weights: vec![f64::NAN, 1.0],
            normalize_weights: false,
        },
        AdapterSetup::Split {
            children: vec![
                AdapterSetup::Name("a".into()),
                AdapterSetup::Name("b".into()),
            ],
            splits: vec![1],
        },
        AdapterSetup::Name("a.b".into()),
        AdapterSetup::PerRow(vec![]),
    ];
    for bad_setup in programmatic {
        bad!(
            n,
            unchanged(m, |m| m.set_active_adapters(bad_setup)),
            Error::InvalidSetup(_) | Error::InvalidName { .. }
        );
    }

    // heads
    bad!(
        n,
        unchanged(m, |m| m.add_head("a", HeadConfig::classification(2))),
        Error::DuplicateHead(_)
    );
    bad!(n, unchanged(m, |m| m.add_head("h", HeadConfig::classification(0))), e if field_is(e, "num_labels"));
    bad!(
        n,
        unchanged(m, |m| m.add_head("h.1", HeadConfig::classification(2))),
        Error::InvalidName { .. }
    );
    let ids = Tensor::<2, Int>::from_ints([[2, 7, 9, 3]], &device());
    let input = || BertInput::new(ids.clone(), Tensor::ones([1, 4], &device()));
    bad!(n, m.classify("zz", input()), Error::UnknownHead(_));
    bad!(n, m.tag("zz", input()), Error::UnknownHead(_));

    // fusions
    let dynamic = FusionConfig::dynamic_fusion;
    bad!(
        n,
        unchanged(m, |m| m.add_adapter_fusion(setup("Fuse[a, b]"), dynamic())),
        Error::DuplicateFusion(key) if key == "a,b"
    );
    bad!(
        n,
        unchanged(m, |m| m.add_adapter_fusion(setup("Fuse[a, zz]"), dynamic())),
        Error::UnknownAdapter(_) | Error::InvalidSetup(_)
    );
    bad!(
        n,
        unchanged(m, |m| m.add_adapter_fusion(setup("Fuse[a, l]"), dynamic())),
        Error::InvalidSetup(_) | Error::Unsupported(_)
    );
    bad!(
        n,
        unchanged(m, |m| m.add_adapter_fusion("a", dynamic())),
        Error::InvalidSetup(_)
    );
    bad!(
        n,
        unchanged(m, |m| m.delete_adapter_fusion(setup("Fuse[b, a]"))),
        Error::UnknownFusion(key) if key == "b,a"
    );
    bad!(
        n,
        unchanged(m, |m| m.train_adapter_fusion("a", true)),
        Error::InvalidSetup(_)
    );
    bad!(
        n,
        unchanged(m, |m| m.train_adapter_fusion(setup("Fuse[a, zz]"), true)),
        Error::UnknownAdapter(_) | Error::InvalidSetup(_)
    );

    // averaging
    let avg = |sources: &[(&str, f64)], strategy| {
        let sources: Vec<(String, f64)> =
            sources.iter().map(|(s, w)| (s.to_string(), *w)).collect();
        move |m: &mut BertModel| {
            let sources: Vec<(&str, f64)> = sources.iter().map(|(s, w)| (s.as_str(), *w)).collect();
            m.average_adapter("avg", &sources, strategy)
        }
    };
    use AverageStrategy::*;
    bad!(
        n,
        unchanged(m, avg(&[], Linear)),
        Error::InvalidSetup(_) | Error::InvalidConfig { .. }
    );
    bad!(
        n,
        unchanged(m, avg(&[("a", 0.5), ("zz", 0.5)], Linear)),
        Error::UnknownAdapter(_)
    );
    bad!(
        n,
        unchanged(m, avg(&[("a", 0.5), ("l", 0.5)], Linear)),
        Error::InvalidSetup(_) | Error::InvalidConfig { .. }
    );
    bad!(
        n,
        unchanged(m, avg(&[("a", f64::NAN), ("b", 0.5)], Linear)),
        Error::InvalidConfig { .. } | Error::InvalidSetup(_)
    );
    bad!(
        n,
        unchanged(m, avg(&[("a", f64::INFINITY), ("b", 0.5)], Linear)),
        Error::InvalidConfig { .. } | Error::InvalidSetup(_)
    );
    bad!(
        n,
        unchanged(m, avg(&[("a", 0.5), ("b", 0.5)], LoraLinearOnlyNegateB)),
        Error::InvalidSetup(_) | Error::InvalidConfig { .. }
    );
    bad!(
        n,
        unchanged(m, avg(&[("l", 1.0)], LoraDeltaWSvd { rank: 0 })),
        Error::InvalidConfig { .. } | Error::InvalidSetup(_)
    );
    bad!(
        n,
        unchanged(m, |m| m.average_adapter("a", &[("b", 1.0)], Linear)),
        Error::DuplicateAdapter(_)
    );

    // saving: unknown names, unwritable places, formats that cannot hold the adapter
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    bad!(
        n,
        m.save_adapter(tmp.path().join("x"), "zz"),
        Error::UnknownAdapter(_)
    );
    bad!(
        n,
        m.save_adapter(file.join("below-a-file"), "a"),
        Error::Io { .. }
    );
    bad!(
        n,
        m.save_all_adapters(file.join("below-a-file")),
        Error::Io { .. }
    );
    bad!(
        n,
        m.save_peft_adapter(tmp.path().join("p"), "a"),
        Error::Unsupported(_) | Error::NotMergeable { .. } | Error::InvalidConfig { .. }
    );
    bad!(
        n,
        m.save_peft_adapter(tmp.path().join("p"), "zz"),
        Error::UnknownAdapter(_)
    );
    bad!(
        n,
        m.save_adapter_fusion(tmp.path().join("f"), setup("Fuse[a, zz]")),
        Error::UnknownFusion(_)
    );
    assert!(!tmp.path().join("x").exists() && !tmp.path().join("f").exists());

    // loading: missing, empty, a file instead of a directory, duplicates, foreign formats
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for dir in [tmp.path().join("missing"), empty.clone(), file.clone()] {
        bad!(n, unchanged(m, |m| m.load_adapter(&dir)), Error::Io { .. });
        bad!(
            n,
            unchanged(m, |m| m.load_adapter_fusion(&dir)),
            Error::Io { .. }
        );
        bad!(
            n,
            unchanged(m, |m| m.load_peft_adapter(&dir, "p")),
            Error::Io { .. }
        );
    }
    bad!(
        n,
        unchanged(m, |m| m.load_all_adapters(tmp.path().join("missing"))),
        Error::Io { .. }
    );
    let saved = tmp.path().join("saved");
    m.save_adapter(&saved, "a").unwrap();
    bad!(
        n,
        unchanged(m, |m| m.load_adapter(&saved)),
        Error::DuplicateAdapter(_) | Error::DuplicateHead(_)
    );
    bad!(
        n,
        unchanged(m, |m| m.load_adapter_as(&saved, "bad name")),
        Error::InvalidName { .. }
    );
    bad!(
        n,
        unchanged(m, |m| m.load_peft_adapter(&saved, "p")),
        Error::Json { .. } | Error::Unsupported(_)
    );
    bad!(
        n,
        unchanged(m, |m| m
            .load_peft_adapter(fixtures().join("peft/peft_lora_qv"), "l")),
        Error::DuplicateAdapter(_)
    );
    bad!(
        n,
        unchanged(m, |m| m
            .load_peft_adapter(fixtures().join("peft/peft_lora_qv"), "")),
        Error::InvalidName { .. }
    );
    let fusion_dir = tmp.path().join("fusion");
    m.save_adapter_fusion(&fusion_dir, setup("Fuse[a, b]"))
        .unwrap();
    bad!(
        n,
        unchanged(m, |m| m.load_adapter_fusion(&fusion_dir)),
        Error::DuplicateFusion(key) if key == "a,b"
    );
    let mut bare = base_model(&device());
    bad!(
        n,
        unchanged(&mut bare, |m| m.load_adapter_fusion(&fusion_dir)),
        Error::InvalidSetup(_)
    );

    // a merged LoRA cannot train or merge twice; reset restores, and a failed merge changes nothing
    let mut merged = populated();
    merged.deactivate_adapters();
    merged
        .add_adapter("l2", AdapterConfig::load("lora[r=2]").unwrap())
        .unwrap();
    merged.merge_adapter("l").unwrap();
    bad!(
        n,
        unchanged(&mut merged, |m| m.merge_adapter("l2")),
        Error::NotMergeable { .. }
    );
    merged
        .merge_adapter("l")
        .expect("merging the merged adapter again is a no-op");
    bad!(
        n,
        unchanged(&mut merged, |m| m.train_adapter("l")),
        Error::NotMergeable { .. } | Error::InvalidSetup(_)
    );

    // models from directories
    let device = device();
    bad!(
        n,
        BertModel::from_pretrained(tmp.path().join("missing"), &device),
        Error::Io { .. }
    );
    bad!(
        n,
        BertModel::from_pretrained(&empty, &device),
        Error::Io { .. }
    );
    let model_dir = tmp.path().join("model");
    std::fs::create_dir(&model_dir).unwrap();
    std::fs::copy(
        fixtures().join("base/config.json"),
        model_dir.join("config.json"),
    )
    .unwrap();
    bad!(
        n,
        BertModel::from_pretrained(&model_dir, &device),
        Error::Io { .. }
    );
    let weights = std::fs::read(fixtures().join("base/model.safetensors")).unwrap();
    std::fs::write(
        model_dir.join("model.safetensors"),
        &weights[..weights.len() / 2],
    )
    .unwrap();
    bad!(
        n,
        BertModel::from_pretrained(&model_dir, &device),
        Error::Format { .. }
    );
    std::fs::write(model_dir.join("model.safetensors"), &weights).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model_dir.join("config.json")).unwrap()).unwrap();
    config["intermediate_size"] = 48.into();
    std::fs::write(model_dir.join("config.json"), config.to_string()).unwrap();
    bad!(n, BertModel::from_pretrained(&model_dir, &device), Error::Format { reason, .. } if reason.contains("intermediate.dense.weight"));

    assert!(
        ModelState::of(&model) == start,
        "the model is as it was built"
    );
    eprintln!("model call cases: {n}");
    assert_eq!(n, 88);
}
