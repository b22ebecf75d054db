//! Fine-tunes a LoRA (or, with `--method pfeiffer`, a Pfeiffer adapter) on a decoder with real
//! text: Rotten Tomatoes reviews as `Review: <text>\nSentiment: fresh|rotten` prompts.
//!
//! ```text
//! tools/fetch_assets.sh
//! cargo run --release --example causal_lm -- --model <hf-decoder-dir> [--method lora|pfeiffer] \
//!     [--train 2000] [--eval 400] [--epochs 1] [--batch 16] [--lr 0.002] [--out target/causal_lm] \
//!     [--data <rotten_tomatoes_corpus.csv.bz2>] [--device flex]
//! ```
//!
//! The model directory holds `config.json`, `model.safetensors` and `tokenizer.json` (a Llama,
//! Mistral, Qwen2 or GPT-2). It reports the held-out perplexity of the answers and the label
//! accuracy (the answer's first token: fresh against rotten) before and after training, saves the
//! adapter (PEFT's format for LoRA on Llama-family models, AdapterHub's for Pfeiffer and for
//! GPT-2, whose per-block `c_attn` LoRA PEFT cannot hold), reloads it into a fresh model and checks
//! it predicts the same, and generates a few samples. No small pretrained decoder can be fetched
//! from PyPI; `tools/make_tiny_decoder.py` writes a tiny random one (CI runs the example on it).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_adapters::backend::device_by_name;
use burn_adapters::generation::{CausalLm, GenerationConfig, generate};
use burn_adapters::models::gpt2::Gpt2Model;
use burn_adapters::models::llama::{DecoderInput, LlamaModel};
use burn_adapters::prelude::*;
use burn_adapters::train::{IGNORE_INDEX, Trainer, TrainingConfig, causal_lm_loss};
use tokenizers::Tokenizer;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The longest review kept, in tokens (the rest is cut).
const REVIEW_TOKENS: usize = 48;

struct Options {
    model: PathBuf,
    data: PathBuf,
    method: String,
    train: usize,
    eval: usize,
    epochs: usize,
    batch: usize,
    lr: f64,
    out: PathBuf,
    device: String,
}

fn options() -> AnyResult<Options> {
    let cache = std::env::var_os("BURN_ADAPTERS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/burn-adapters")))
        .unwrap_or_default();
    let mut o = Options {
        model: PathBuf::new(),
        data: cache.join("data/rotten_tomatoes_corpus.csv.bz2"),
        method: "lora".into(),
        train: 2000,
        eval: 400,
        epochs: 1,
        batch: 16,
        lr: 2e-3,
        out: PathBuf::from("target/causal_lm"),
        device: "flex".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--model" => o.model = value.into(),
            "--data" => o.data = value.into(),
            "--method" => o.method = value,
            "--train" => o.train = value.parse()?,
            "--eval" => o.eval = value.parse()?,
            "--epochs" => o.epochs = value.parse()?,
            "--batch" => o.batch = value.parse()?,
            "--lr" => o.lr = value.parse()?,
            "--out" => o.out = value.into(),
            "--device" => o.device = value,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    if o.model.as_os_str().is_empty() {
        return Err(
            "--model DIR is required (a Hugging Face Llama/Mistral/Qwen2 directory)".into(),
        );
    }
    Ok(o)
}

/// One review as a prompt and its answer: token ids and the labels the loss counts.
struct Example {
    ids: Vec<i64>,
    labels: Vec<i64>,
    fresh: bool,
}

struct Vocabulary {
    tokenizer: Tokenizer,
    /// The answers' first tokens: what the accuracy compares.
    fresh: i64,
    rotten: i64,
}

impl Vocabulary {
    fn new(path: PathBuf) -> AnyResult<Self> {
        let tokenizer =
            Tokenizer::from_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let first = |word: &str| -> AnyResult<i64> {
            let ids = tokenizer.encode(word, false)?.get_ids().to_vec();
            Ok(*ids.first().ok_or("an answer encodes to nothing")? as i64)
        };
        let (fresh, rotten) = (first(" fresh")?, first(" rotten")?);
        if fresh == rotten {
            return Err("\" fresh\" and \" rotten\" start with the same token".into());
        }
        Ok(Self {
            tokenizer,
            fresh,
            rotten,
        })
    }

    fn encode(&self, text: &str) -> AnyResult<Vec<i64>> {
        Ok(self
            .tokenizer
            .encode(text, false)?
            .get_ids()
            .iter()
            .map(|&i| i as i64)
            .collect())
    }

    fn example(&self, review: &str, fresh: bool) -> AnyResult<Example> {
        let mut ids = self.encode("Review:")?;
        let mut text = self.encode(&format!(" {review}"))?;
        text.truncate(REVIEW_TOKENS);
        ids.extend(text);
        ids.extend(self.encode("\nSentiment:")?);
        let answer = self.encode(if fresh { " fresh" } else { " rotten" })?;
        let mut labels = vec![IGNORE_INDEX; ids.len()];
        labels.extend(&answer);
        ids.extend(answer);
        Ok(Example { ids, labels, fresh })
    }
}

/// (train, eval) examples: fresh and rotten rows in file order, every fifth one held out.
fn examples(o: &Options, vocabulary: &Vocabulary) -> AnyResult<(Vec<Example>, Vec<Example>)> {
    let file = std::fs::File::open(&o.data)
        .map_err(|e| format!("{}: {e} (run tools/fetch_assets.sh)", o.data.display()))?;
    let mut reader = csv::Reader::from_reader(bzip2::read::BzDecoder::new(file));
    let headers = reader.headers()?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or(format!("no `{name}` column"))
    };
    let (category, text) = (column("category")?, column("text")?);
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for (i, record) in reader.records().enumerate() {
        let record = record?;
        let fresh = match &record[category] {
            "fresh" => true,
            "rotten" => false,
            _ => continue,
        };
        let split = if i % 5 == 0 { &mut eval } else { &mut train };
        split.push(vocabulary.example(&record[text], fresh)?);
        if train.len() >= o.train && eval.len() >= o.eval {
            break;
        }
    }
    train.truncate(o.train);
    eval.truncate(o.eval);
    Ok((train, eval))
}

/// A left-padded batch: ids, mask, labels, and each row's last prompt position.
fn batch(
    rows: &[&Example],
    pad: i64,
    device: &Device,
) -> (DecoderInput, Tensor<2, Int>, Vec<usize>) {
    let width = rows.iter().map(|r| r.ids.len()).max().unwrap_or(1);
    let (mut ids, mut mask, mut labels, mut prompt_ends) = (vec![], vec![], vec![], vec![]);
    for row in rows {
        let padding = width - row.ids.len();
        ids.extend(std::iter::repeat_n(pad, padding).chain(row.ids.iter().copied()));
        mask.extend(std::iter::repeat_n(0, padding).chain(std::iter::repeat_n(1, row.ids.len())));
        labels.extend(std::iter::repeat_n(IGNORE_INDEX, padding).chain(row.labels.iter().copied()));
        let answer_start = row
            .labels
            .iter()
            .position(|l| *l != IGNORE_INDEX)
            .unwrap_or(1);
        prompt_ends.push(padding + answer_start - 1);
    }
    let matrix = |values: Vec<i64>| {
        Tensor::<2, Int>::from_data(TensorData::new(values, [rows.len(), width]), device)
    };
    let input = DecoderInput::new(matrix(ids), matrix(mask));
    (input, matrix(labels), prompt_ends)
}

/// Held-out perplexity of the answers and label accuracy.
fn evaluate<M: Decoder>(
    model: &M,
    eval: &[Example],
    v: &Vocabulary,
    o: &Options,
    device: &Device,
) -> AnyResult<(f64, f64, Vec<bool>)> {
    let (mut loss_sum, mut predictions) = (0.0, Vec::new());
    let pad = model.pad_token_id().unwrap_or(0) as i64;
    for chunk in eval.chunks(o.batch) {
        let rows: Vec<&Example> = chunk.iter().collect();
        let (input, labels, prompt_ends) = batch(&rows, pad, device);
        let logits = model.logits(input)?;
        let loss = causal_lm_loss(logits.clone(), labels)?;
        loss_sum += loss.into_scalar::<f32>() as f64 * chunk.len() as f64;
        let [_, _, vocab] = logits.dims();
        for (i, end) in prompt_ends.into_iter().enumerate() {
            let row = logits
                .clone()
                .narrow(0, i, 1)
                .narrow(1, end, 1)
                .reshape([vocab]);
            let scores: Vec<f32> = row
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(|e| format!("{e:?}"))?;
            predictions.push(scores[v.fresh as usize] > scores[v.rotten as usize]);
        }
    }
    let correct = predictions
        .iter()
        .zip(eval)
        .filter(|(p, e)| **p == e.fresh)
        .count();
    Ok((
        (loss_sum / eval.len() as f64).exp(),
        correct as f64 / eval.len() as f64,
        predictions,
    ))
}

fn train<M: Decoder>(
    mut model: M,
    train: &[Example],
    o: &Options,
    device: &Device,
) -> AnyResult<M> {
    let steps = o.epochs * train.len().div_ceil(o.batch);
    let config = TrainingConfig::new()
        .with_learning_rate(o.lr)
        .with_warmup_ratio(0.1)
        .with_linear_decay(true);
    let mut trainer = Trainer::new(&config, steps);
    let pad = model.pad_token_id().unwrap_or(0) as i64;
    for epoch in 0..o.epochs {
        let mut total = 0.0;
        for chunk in train.chunks(o.batch) {
            let rows: Vec<&Example> = chunk.iter().collect();
            let (input, labels, _) = batch(&rows, pad, device);
            let loss = causal_lm_loss(model.logits(input)?, labels)?;
            total += loss.clone().into_scalar::<f32>() as f64;
            model = trainer.step(model, loss);
        }
        println!(
            "epoch {}: mean training loss {:.4}",
            epoch + 1,
            total / train.len().div_ceil(o.batch) as f64
        );
    }
    Ok(model)
}

/// What the example needs of a decoder host.
trait Decoder: AdapterModel + CausalLm + Sized {
    /// Whether its LoRA has PEFT's form (GPT-2's per-block `c_attn` LoRA has not).
    const PEFT_LORA: bool;
    fn load(dir: &Path, device: &Device) -> burn_adapters::Result<Self>;
    fn logits(&self, input: DecoderInput) -> burn_adapters::Result<Tensor<3>>;
    fn pad_token_id(&self) -> Option<usize>;
}

impl Decoder for LlamaModel {
    const PEFT_LORA: bool = true;
    fn load(dir: &Path, device: &Device) -> burn_adapters::Result<Self> {
        LlamaModel::from_pretrained(dir, device)
    }
    fn logits(&self, input: DecoderInput) -> burn_adapters::Result<Tensor<3>> {
        self.try_forward(input)
    }
    fn pad_token_id(&self) -> Option<usize> {
        self.config().pad_token_id
    }
}

impl Decoder for Gpt2Model {
    const PEFT_LORA: bool = false;
    fn load(dir: &Path, device: &Device) -> burn_adapters::Result<Self> {
        Gpt2Model::from_pretrained(dir, device)
    }
    fn logits(&self, input: DecoderInput) -> burn_adapters::Result<Tensor<3>> {
        self.try_forward(input)
    }
    fn pad_token_id(&self) -> Option<usize> {
        self.config().pad_token_id
    }
}

fn run() -> AnyResult<()> {
    let o = options()?;
    let config = std::fs::read_to_string(o.model.join("config.json"))?;
    let config: serde_json::Value = serde_json::from_str(&config)?;
    match config.get("model_type").and_then(|t| t.as_str()) {
        Some("gpt2") => run_with::<Gpt2Model>(&o),
        _ => run_with::<LlamaModel>(&o),
    }
}

fn run_with<M: Decoder>(o: &Options) -> AnyResult<()> {
    let device = device_by_name(&format!("{}+autodiff", o.device))?;
    let vocabulary = Vocabulary::new(o.model.join("tokenizer.json"))?;
    let (train_set, eval_set) = examples(o, &vocabulary)?;
    println!(
        "{} training and {} held-out reviews",
        train_set.len(),
        eval_set.len()
    );
    let mut model = M::load(&o.model, &device)?;
    let config = match o.method.as_str() {
        "lora" => {
            "lora[r=8,alpha=16,attn_matrices=[\"q\",\"k\",\"v\"],intermediate_lora=True,output_lora=True]"
        }
        "pfeiffer" => "seq_bn[reduction_factor=4]",
        other => return Err(format!("--method {other}: lora or pfeiffer").into()),
    };
    model.add_adapter("task", AdapterConfig::load(config)?)?;
    model.set_active_adapters("task")?;
    let (ppl, acc, _) = evaluate(&model, &eval_set, &vocabulary, o, &device)?;
    println!("before: perplexity {ppl:.3}, accuracy {acc:.3}");
    model.train_adapter("task")?;
    let model = train(model, &train_set, o, &device)?;
    let (ppl, acc, predictions) = evaluate(&model, &eval_set, &vocabulary, o, &device)?;
    println!("after:  perplexity {ppl:.3}, accuracy {acc:.3}");

    let saved = save(&model, o)?;
    let mut reloaded = M::load(&o.model, &device)?;
    match o.method.as_str() {
        "lora" if M::PEFT_LORA => reloaded.load_peft_adapter(&saved, "task")?,
        _ => drop(reloaded.load_adapter(&saved)?),
    }
    reloaded.set_active_adapters("task")?;
    let (_, reloaded_acc, reloaded_predictions) =
        evaluate(&reloaded, &eval_set, &vocabulary, o, &device)?;
    if reloaded_predictions != predictions {
        return Err("the reloaded adapter predicts differently".into());
    }
    println!(
        "reloaded from {}: accuracy {reloaded_acc:.3}, same predictions",
        saved.display()
    );
    samples(&reloaded, &eval_set, &vocabulary, &device)
}

fn save<M: Decoder>(model: &M, o: &Options) -> AnyResult<PathBuf> {
    let dir = o.out.join(&o.method);
    match o.method.as_str() {
        "lora" if M::PEFT_LORA => model.save_peft_adapter(&dir, "task")?,
        _ => model.save_adapter(&dir, "task")?,
    }
    Ok(dir)
}

/// Greedy continuations of the first held-out prompts.
fn samples<M: Decoder>(
    model: &M,
    eval: &[Example],
    v: &Vocabulary,
    device: &Device,
) -> AnyResult<()> {
    for example in eval.iter().take(3) {
        let prompt_len = example
            .labels
            .iter()
            .position(|l| *l != IGNORE_INDEX)
            .unwrap_or(example.ids.len());
        let prompt = &example.ids[..prompt_len];
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(prompt.to_vec(), [1, prompt.len()]),
            device,
        );
        let tokens = generate(
            model,
            ids.clone(),
            ids.ones_like(),
            &GenerationConfig::new(4),
            |_, _| {},
        )?;
        let ids: Vec<u32> = prompt.iter().map(|&i| i as u32).collect();
        let new: Vec<u32> = tokens[0].iter().map(|&i| i as u32).collect();
        println!(
            "{}  →{}",
            v.tokenizer.decode(&ids, true)?.replace('\n', " | "),
            v.tokenizer.decode(&new, true)?
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("causal_lm: {e}");
            ExitCode::FAILURE
        }
    }
}
