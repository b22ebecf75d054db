//! PEFT's IA3 files (`tools/gen_fixtures_peft_ia3.py`) on BERT, Llama and GPT-2: PEFT's default
//! placements, which scale the inputs of the output projections, and AdapterHub's IA3 written as
//! PEFT's; merging input-scaling IA3 and the combinations refused.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use burn_adapters::models::bert::BertModel;
use burn_adapters::models::gpt2::Gpt2Model;
use burn_adapters::models::llama::LlamaModel;
use burn_adapters::prelude::*;
use common::families::{Family, deviation, export_root, merge_computes_the_same_and_resets};
use common::snapshot::snapshot;
use common::*;

const TOLERANCE: f64 = 1e-5;

fn case_dir(name: &str) -> PathBuf {
    fixtures().join("peft_ia3").join(name)
}

/// Saves adapter `name` of `model` as PEFT into `out` (with `expected.safetensors` for the
/// Python checkers) and reloads it on a fresh base: the same outputs.
fn save_and_reload<F: Family>(model: &F, name: &str, out: &Path, device: &Device) {
    model.save_peft_adapter(out, name).unwrap();
    let mut again = F::base(device);
    again.load_peft_adapter(out, name).unwrap();
    again.set_active_adapters(name).unwrap();
    let before = model.output(device);
    let d = max_abs_diff_tensors(again.output(device), before.clone());
    assert!(d <= 1e-6, "{}: {d}", out.display());
    let dims = before.dims();
    write_f32(
        &out.join("expected.safetensors"),
        F::OUTPUT,
        &values(before),
        &dims,
    );
}

/// Loads PEFT's `case`, compares with PEFT's outputs, saves it back into `out` (the same
/// vectors) and merges it.
fn matches_peft<F: Family>(case: &str, out: &Path, device: &Device) {
    let dir = case_dir(case);
    let mut model = F::base(device);
    model.load_peft_adapter(&dir, "ia3").unwrap();
    let config = model.adapter_config("ia3").unwrap().lora().unwrap().clone();
    assert_eq!(
        config.ia3_input_scaling,
        case.ends_with("default"),
        "{case}"
    );
    model.set_active_adapters("ia3").unwrap();
    let expected = dir.join("expected.safetensors");
    let d = deviation::<F>(model.output(device), &expected, F::OUTPUT, device);
    println!("{case}: max |Δ| {d:.1e}");
    assert!(d <= TOLERANCE, "{case}: {d}");
    save_and_reload(&model, "ia3", out, device);
    // The vectors go back as PEFT wrote them.
    let file = |dir: &Path| dir.join("adapter_model.safetensors");
    let keys = |dir: &Path| {
        let bytes = std::fs::read(file(dir)).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<String> = file.names().into_iter().map(str::to_string).collect();
        names.sort();
        names
    };
    let names = keys(&dir);
    assert!(!names.is_empty());
    assert_eq!(names, keys(out), "{case}");
    for key in &names {
        assert_eq!(
            read_tensor(&file(&dir), key),
            read_tensor(&file(out), key),
            "{key}"
        );
    }
    merge_computes_the_same_and_resets(&mut model, "ia3", device);
}

/// PEFT's IA3 files load with PEFT's outputs, save back and reload, and merge exactly. Under
/// `BURN_ADAPTERS_EXPORT_PEFT` the BERT files go there for `tools/check_peft_import.py`, the
/// decoders' to `BURN_ADAPTERS_EXPORT_DECODER` for the decoder checker.
#[test]
fn peft_ia3_files_both_ways() {
    let device = device();
    let (_bert_scratch, bert_root) = export_root("BURN_ADAPTERS_EXPORT_PEFT");
    let (_decoder_scratch, decoder_root) = export_root("BURN_ADAPTERS_EXPORT_DECODER");
    for case in ["bert_default", "bert_outputs"] {
        matches_peft::<BertModel>(case, &bert_root.join(format!("ia3_{case}")), &device);
    }
    let llama_out = decoder_root.join("llama/ia3_default");
    matches_peft::<LlamaModel>("llama_default", &llama_out, &device);
    let gpt2_out = decoder_root.join("gpt2/ia3_default");
    matches_peft::<Gpt2Model>("gpt2_default", &gpt2_out, &device);

    // AdapterHub's IA3 (alpha 2, folded into PEFT's `l`) saves as PEFT's.
    let mut model = BertModel::base(&device);
    let config = AdapterConfig::load("ia3[alpha=2,init_weights=bert,init_weights_seed=4]").unwrap();
    model.add_adapter("ah_ia3", config).unwrap();
    model.set_active_adapters("ah_ia3").unwrap();
    let out = bert_root.join("ia3_from_adapterhub");
    save_and_reload(&model, "ah_ia3", &out, &device);
}

/// Input-scaling IA3 from a config: PEFT's default placement on BERT as a config string,
/// merged exactly; the combinations and files that cannot hold it are refused.
#[test]
fn input_scaling_ia3_and_its_limits() {
    let device = device();
    let mut model = BertModel::base(&device);
    let config = "ia3[attn_matrices=[k,v,o],intermediate_lora=False,output_lora=True,\
                  ia3_input_scaling=True,init_weights=bert,init_weights_seed=7]";
    model
        .add_adapter("in", AdapterConfig::load(config).unwrap())
        .unwrap();
    model.set_active_adapters("in").unwrap();
    merge_computes_the_same_and_resets(&mut model, "in", &device);
    let scratch = tempfile::tempdir().unwrap();
    let err = model.save_adapter(scratch.path(), "in").unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("ia3_input_scaling")),
        "{err}"
    );

    model
        .add_adapter(
            "lora",
            AdapterConfig::load("lora[attn_matrices=[o]]").unwrap(),
        )
        .unwrap();
    let err = model.set_active_adapters("Stack[in, lora]").unwrap_err();
    assert!(
        matches!(&err, Error::InvalidSetup(m) if m.contains("input")),
        "{err}"
    );
    model
        .add_adapter("in2", AdapterConfig::load(config).unwrap())
        .unwrap();
    model.set_active_adapters("Stack[in, in2]").unwrap();
    model.forward(fixture_inputs(&device));

    configs_refused_naming_the_field(&[("lora[ia3_input_scaling=True]", "ia3_input_scaling")]);

    // PEFT's file with the first FFN projection (not one back to the hidden width) scaling its
    // input: refused, naming it.
    let (_scratch, dir) = copy_fixture("peft_ia3/bert_outputs");
    edit_safetensors(&dir.join("adapter_model.safetensors"), |tensors| {
        for (key, shape, bytes) in tensors.iter_mut() {
            if key.contains("intermediate.dense") {
                *shape = vec![1, 32]; // its input, 32 features (output: 64)
                bytes.truncate(32 * 4);
            }
        }
    });
    let before = snapshot(&model);
    let err = model.load_peft_adapter(&dir, "bad").unwrap_err();
    assert!(
        matches!(&err, Error::Unsupported(m) if m.contains("intermediate.dense")),
        "{err}"
    );
    assert_eq!(before, snapshot(&model));
}
