//! Prompt tuning: BERT against AdapterHub (`tools/gen_fixtures_prompt.py`); Llama and GPT-2
//! (which adapters 1.3.0 cannot prompt) against themselves: a prompt of token embeddings is
//! those tokens, through a forward and through cached generation.

mod common;

use std::path::Path;

use burn::tensor::{Device, Int, Tensor};
use burn_adapters::generation::{CausalLm, GenerationConfig, generate};
use burn_adapters::models::bert::BertModel;
use burn_adapters::models::gpt2::Gpt2Model;
use burn_adapters::models::llama::{DecoderInput, LlamaModel};
use burn_adapters::prelude::*;
use common::decoder::*;
use common::snapshot::snapshot;
use common::*;

const TOLERANCE: f64 = 1e-5;

fn root() -> std::path::PathBuf {
    fixtures().join("prompt/bert")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hidden(model: &BertModel, device: &Device) -> Vec<f32> {
    values(model.forward(fixture_inputs(device)).last_hidden_state)
}

#[test]
fn bert_prompt_cases_match_adapterhub() {
    let device = device();
    let listed = json(&root().join("cases.json"));
    for dir in case_dirs("prompt/bert") {
        let name = dir.file_name().unwrap().to_str().unwrap();
        let case = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap();
        let mut model = base_model(&device);
        model.load_adapter(&dir).unwrap();
        model.set_active_adapters(name).unwrap();
        let expected = read_tensor(&dir.join("expected.safetensors"), "last_hidden_state").1;
        let d = max_abs_diff(&hidden(&model, &device), &expected);
        println!("bert {name}: max |Δ| {d:.2e}");
        assert!(d <= TOLERANCE, "{name}: max |Δ| {d}");
        let params = model.adapter_summary().adapters[0].num_params as u64;
        assert_eq!(params, case["num_params"].as_u64().unwrap(), "{name}");
    }
}

#[test]
fn bert_prompt_setups_match_adapterhub() {
    let device = device();
    for setup in json(&root().join("setups.json")).as_array().unwrap() {
        let name = setup["name"].as_str().unwrap();
        let mut model = base_model(&device);
        for dir in setup["adapters"].as_array().unwrap() {
            model
                .load_adapter(fixtures().join(dir.as_str().unwrap()))
                .unwrap();
        }
        model
            .set_active_adapters(setup["text"].as_str().unwrap())
            .unwrap();
        let file = root().join(format!("setup_{name}.safetensors"));
        let d = max_abs_diff(&hidden(&model, &device), &read_tensor(&file, "output").1);
        println!("bert setup {name}: max |Δ| {d:.2e}");
        assert!(d <= TOLERANCE, "{name}: max |Δ| {d}");
    }
}

/// What Rust saves reloads the same; under `BURN_ADAPTERS_EXPORT_PROMPT` the files and outputs
/// go to `<dir>/<case>` for `tools/check_rust_adapters.py`.
#[test]
fn rust_saved_prompts_reload_exactly() {
    let device = device();
    let export = std::env::var_os("BURN_ADAPTERS_EXPORT_PROMPT").map(std::path::PathBuf::from);
    let scratch = tempfile::tempdir().unwrap();
    let out_root = export.unwrap_or_else(|| scratch.path().to_path_buf());
    for dir in case_dirs("prompt/bert") {
        let name = dir.file_name().unwrap().to_str().unwrap();
        let mut model = base_model(&device);
        model.load_adapter(&dir).unwrap();
        model.set_active_adapters(name).unwrap();
        let out = out_root.join(name);
        model.save_adapter(&out, name).unwrap();
        let mut reloaded = base_model(&device);
        reloaded.load_adapter(&out).unwrap();
        reloaded.set_active_adapters(name).unwrap();
        let output = model.forward(fixture_inputs(&device)).last_hidden_state;
        let dims = output.dims();
        let before = values(output);
        assert_eq!(before, hidden(&reloaded, &device), "{name}");
        write_f32(
            &out.join("expected.safetensors"),
            "last_hidden_state",
            &before,
            &dims,
        );
    }
}

/// The tokens `[5, 9, 13]` as a prompt of `combine`'s kind on `model`.
fn token_prompt<M: AdapterModel>(model: &mut M, combine: &str) {
    let config = format!("prompt_tuning[prompt_length=3,combine={combine}]");
    model
        .add_adapter("p", AdapterConfig::load(&config).unwrap())
        .unwrap();
    model.init_prompt_from_tokens("p", &[5, 9, 13]).unwrap();
    model.set_active_adapters("p").unwrap();
}

/// Row `i` of `input` with `[5, 9, 13]` (and ones in the mask) inserted at `offsets[i]`.
fn with_tokens(input: &DecoderInput, offsets: &[usize], device: &Device) -> DecoderInput {
    let seq = input.input_ids.dims()[1];
    let insert = |t: &Tensor<2, Int>, block: [i64; 3]| {
        let rows = offsets.iter().enumerate().map(|(i, &at)| {
            let row = t.clone().narrow(0, i, 1);
            let block = Tensor::<1, Int>::from_ints(block, device).reshape([1, 3]);
            let tail = row.clone().narrow(1, at, seq - at);
            match at {
                0 => Tensor::cat(vec![block, tail], 1),
                _ => Tensor::cat(vec![row.narrow(1, 0, at), block, tail], 1),
            }
        });
        Tensor::cat(rows.collect(), 0)
    };
    DecoderInput {
        input_ids: insert(&input.input_ids, [5, 9, 13]),
        attention_mask: input.attention_mask.as_ref().map(|m| insert(m, [1, 1, 1])),
        position_ids: None,
    }
}

/// The input's positions of an output for `with_tokens`' input.
fn drop_tokens(t: Tensor<3>, offsets: &[usize]) -> Tensor<3> {
    let [_, total, _] = t.dims();
    let rows = offsets.iter().enumerate().map(|(i, &at)| {
        let row = t.clone().narrow(0, i, 1);
        let tail = row.clone().narrow(1, at + 3, total - at - 3);
        match at {
            0 => tail,
            _ => Tensor::cat(vec![row.narrow(1, 0, at), tail], 1),
        }
    });
    Tensor::cat(rows.collect(), 0)
}

/// A prompt of the embeddings of `[5, 9, 13]` gives the logits and the cached greedy tokens of
/// those tokens spelled out: before the input, or after each row's first real token (the
/// fixture's row 1 has two positions of left padding).
fn a_prompt_of_token_embeddings_is_those_tokens<M>(
    base: M,
    forward: impl Fn(&M, DecoderInput) -> Tensor<3>,
) where
    M: AdapterModel + CausalLm + Clone,
{
    let device = device();
    let input = decoder_inputs(&device);
    let config = GenerationConfig::new(12);
    for (combine, offsets) in [("prefix", [0, 0]), ("prefix_after_bos", [1, 3])] {
        let mut model = base.clone();
        token_prompt(&mut model, combine);
        let prompted = forward(&model, input.clone());
        let spelled = with_tokens(&input, &offsets, &device);
        let spelled_out = drop_tokens(forward(&base, spelled.clone()), &offsets);
        let d = max_abs_diff_tensors(at_tokens(prompted, &input), at_tokens(spelled_out, &input));
        assert!(d <= TOLERANCE, "{combine}: max |Δ| {d}");

        let (ids, mask) = (
            input.input_ids.clone(),
            input.attention_mask.clone().unwrap(),
        );
        let generated = generate(&model, ids, mask, &config, |_, _| {}).unwrap();
        let (ids, mask) = (spelled.input_ids, spelled.attention_mask.unwrap());
        assert_eq!(
            generated,
            generate(&base, ids, mask, &config, |_, _| {}).unwrap(),
            "{combine}: cached generation"
        );
    }
}

#[test]
fn a_llama_prompt_of_token_embeddings_is_those_tokens() {
    let device = device();
    let base = LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), &device).unwrap();
    a_prompt_of_token_embeddings_is_those_tokens(base, |m, input| m.try_forward(input).unwrap());
}

#[test]
fn a_gpt2_prompt_of_token_embeddings_is_those_tokens() {
    let device = device();
    let base = Gpt2Model::from_pretrained(fixtures().join("decoder/gpt2/base"), &device).unwrap();
    a_prompt_of_token_embeddings_is_those_tokens(base, |m, input| m.try_forward(input).unwrap());
}

#[test]
fn training_changes_only_the_prompt() {
    let device = Device::flex().autodiff();
    let mut model =
        LlamaModel::from_pretrained(fixtures().join("decoder/llama/base"), &device).unwrap();
    model
        .add_adapter(
            "p",
            AdapterConfig::load("prompt_tuning[prompt_length=4]").unwrap(),
        )
        .unwrap();
    model.train_adapter("p").unwrap();
    let before = snapshot(&model);
    let (model, losses) = train_steps(model, |m, input| m.forward(input), &device);
    assert!(losses.last() < losses.first(), "{losses:?}");
    let moved: Vec<String> = snapshot(&model)
        .into_iter()
        .filter(|(path, values)| before.get(path) != Some(values))
        .map(|(path, _)| path)
        .collect();
    assert_eq!(
        moved,
        ["embedding_site.prompt_tunings.p.embedding"],
        "only the prompt trains"
    );
}

#[test]
fn bad_prompts_and_setups_are_errors() {
    let device = device();
    let err = AdapterConfig::load("prompt_tuning[prompt_length=0]").unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { field, .. } if field == "prompt_length"),
        "{err}"
    );
    let mut model = base_model(&device);
    let from_string =
        AdapterConfig::load(r#"prompt_tuning[prompt_init="from_string",prompt_init_text="good"]"#);
    let err = model.add_adapter("s", from_string.unwrap()).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidConfig { field, .. } if field == "prompt_init"),
        "{err}"
    );
    assert!(!model.has_adapter("s"));

    model
        .add_adapter("p", AdapterConfig::load("prompt_tuning").unwrap())
        .unwrap();
    model
        .add_adapter("q", AdapterConfig::load("prompt_tuning").unwrap())
        .unwrap();
    model
        .add_adapter("b", AdapterConfig::load("seq_bn").unwrap())
        .unwrap();
    for setup in [
        "Stack[b, p]",
        "Stack[p, q]",
        "BatchSplit[p, b](batch_sizes=1,1)",
        "Parallel[p, b]",
        "PerRow[p, b]",
    ] {
        let err = model.set_active_adapters(setup).unwrap_err();
        assert!(matches!(err, Error::InvalidSetup(_)), "{setup}: {err}");
    }
    model.set_active_adapters("Stack[p, b]").unwrap();
    for tokens in [&[][..], &[1000][..]] {
        let err = model.init_prompt_from_tokens("p", tokens).unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput { .. }),
            "{tokens:?}: {err}"
        );
    }
    let err = model.init_prompt_from_tokens("b", &[1]).unwrap_err();
    assert!(matches!(err, Error::InvalidSetup(_)), "{err}");

    // prompt positions count against the context
    let mut gpt2 =
        Gpt2Model::from_pretrained(fixtures().join("decoder/gpt2/base"), &device).unwrap();
    gpt2.add_adapter(
        "p",
        AdapterConfig::load("prompt_tuning[prompt_length=60]").unwrap(),
    )
    .unwrap();
    gpt2.set_active_adapters("p").unwrap();
    let err = gpt2.try_forward(decoder_inputs(&device)).unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
}

/// On burn's `TransformerEncoder` (no AdapterHub counterpart), a prompt is the same encoder run
/// on the prompt and the input together: unmasked, and under a causal attention mask with a
/// padding mask, where every position sees the prompt and the prompt sees only itself.
#[test]
fn an_encoder_prompt_is_the_prompt_before_the_input() {
    use burn::nn::attention::generate_autoregressive_mask;
    use burn::nn::transformer::TransformerEncoderConfig;
    use burn::tensor::{Bool, Distribution};
    use burn_adapters::models::encoder::{AdapterTransformerEncoder, TransformerEncoderInput};
    let device = device();
    let encoder = TransformerEncoderConfig::new(16, 32, 4, 2)
        .with_dropout(0.0)
        .init(&device);
    let mut model = AdapterTransformerEncoder::from_encoder(encoder);
    let config = AdapterConfig::load("prompt_tuning[prompt_length=3]").unwrap();
    model.add_adapter("p", config).unwrap();
    let (batch, seq, len) = (2, 5, 3);
    let x = Tensor::<3>::random([batch, seq, 16], Distribution::Normal(0.0, 1.0), &device);
    let prompt = model.embedding_site().unwrap().prompts().get("p").unwrap();
    let prompt = prompt
        .embedding
        .val()
        .unsqueeze::<3>()
        .expand([batch, len, 16]);
    let joined = Tensor::cat(vec![prompt, x.clone()], 1);
    let pad =
        Tensor::<2, Int>::from_ints([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]], &device).equal_elem(1);
    let causal = generate_autoregressive_mask(batch, seq, &device);
    let joined_pad = Tensor::cat(
        vec![
            Tensor::<2, Bool>::full([batch, len], false, &device),
            pad.clone(),
        ],
        1,
    );
    let top = Tensor::cat(
        vec![
            Tensor::<3, Bool>::full([batch, len, len], false, &device),
            Tensor::<3, Bool>::full([batch, len, seq], true, &device),
        ],
        2,
    );
    let bottom = Tensor::cat(
        vec![
            Tensor::<3, Bool>::full([batch, seq, len], false, &device),
            causal.clone(),
        ],
        2,
    );
    let joined_attn = Tensor::cat(vec![top, bottom], 1);
    let plain = model.forward(TransformerEncoderInput::new(joined.clone()));
    let masked = model.forward(
        TransformerEncoderInput::new(joined)
            .mask_pad(joined_pad)
            .mask_attn(joined_attn),
    );
    model.set_active_adapters("p").unwrap();
    let out = model.forward(TransformerEncoderInput::new(x.clone()));
    let d = max_abs_diff_tensors(out, plain.narrow(1, len, seq));
    assert!(d <= 1e-6, "unmasked: max |Δ| {d}");
    let input = TransformerEncoderInput::new(x)
        .mask_pad(pad)
        .mask_attn(causal);
    let out = model.try_forward(input).unwrap();
    let d = max_abs_diff_tensors(out, masked.narrow(1, len, seq));
    assert!(d <= 1e-6, "masked: max |Δ| {d}");
}
