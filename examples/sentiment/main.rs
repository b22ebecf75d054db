//! The main job: fine-tune a Pfeiffer adapter on all-MiniLM-L6-v2 for Rotten Tomatoes sentiment,
//! compare with a frozen-encoder linear probe, save and reload the adapter, then add a second
//! adapter for subjectivity and switch between them.
//!
//! ```text
//! tools/fetch_assets.sh && cargo run --release --example sentiment
//! ```
//!
//! Options: `--model-dir DIR --data FILE --device flex|wgpu|tch|cuda --epochs N --lr X
//! --batch-size N --max-len N --pad-to N --out DIR --summary-json PATH --limit N --seed N` (see
//! `--help`).

mod pipeline;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_adapters::backend::device_by_name;
use burn_adapters::heads::{HeadConfig, PredictionHead};
use burn_adapters::models::bert::BertModel;
use burn_adapters::prelude::*;
use burn_adapters::train::{Trainer, TrainingConfig, correct_predictions, cross_entropy};
use indicatif::{ProgressBar, ProgressStyle};
use pipeline::{EpochLog, Example, evaluate, fit};

// burn-flex allocates a buffer per op; mimalloc keeps freed ones instead of handing them back to the
// OS as glibc does for large blocks: the CPU forward gets ~15 % faster (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Options {
    model_dir: PathBuf,
    data: PathBuf,
    device: String,
    epochs: usize,
    lr: f64,
    batch_size: usize,
    max_len: usize,
    pad_to: usize,
    out: PathBuf,
    summary_json: Option<PathBuf>,
    limit: Option<usize>,
    seed: u64,
    adapter: String,
    task_only: bool,
}

const HELP: &str = "usage: sentiment [--model-dir DIR] [--data CSV.bz2] [--device flex|wgpu|tch|cuda] [--epochs 2]
                 [--lr 1e-3] [--batch-size 32] [--max-len 64] [--pad-to 0] [--out DIR] [--summary-json PATH] [--limit N] [--seed 42]
                 [--adapter CONFIG (default pfeiffer[reduction_factor=16]; e.g. lora, ia3)] [--task-only]

--task-only trains and evaluates the sentiment adapter, saves and reloads it, and skips the linear probe
and the second task. --pad-to N pads every training batch to at least N tokens (0: to its longest row).";

fn options() -> Result<Options, String> {
    let cache = std::env::var_os("BURN_ADAPTERS_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/burn-adapters")))
        .unwrap_or_else(|| PathBuf::from(".cache/burn-adapters"));
    let mut o = Options {
        model_dir: cache.join("all-MiniLM-L6-v2"),
        data: cache.join("data/rotten_tomatoes_corpus.csv.bz2"),
        device: "flex".into(),
        epochs: 2,
        lr: 1e-3,
        batch_size: 32,
        max_len: 64,
        pad_to: 0,
        out: PathBuf::from("target/sentiment"),
        summary_json: None,
        limit: None,
        seed: 42,
        adapter: "pfeiffer[reduction_factor=16]".into(),
        task_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--model-dir" => o.model_dir = value()?.into(),
            "--data" => o.data = value()?.into(),
            "--device" => o.device = value()?,
            "--epochs" => o.epochs = number(value()?)? as usize,
            "--lr" => o.lr = number(value()?)?,
            "--batch-size" => o.batch_size = (number(value()?)? as usize).max(1),
            "--max-len" => o.max_len = (number(value()?)? as usize).max(2),
            "--pad-to" => o.pad_to = number(value()?)? as usize,
            "--out" => o.out = value()?.into(),
            "--summary-json" => o.summary_json = Some(value()?.into()),
            "--limit" => o.limit = Some(number(value()?)? as usize),
            "--seed" => o.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--adapter" => o.adapter = value()?,
            "--task-only" => o.task_only = true,
            "-h" | "--help" => return Err(HELP.into()),
            other => return Err(format!("unknown argument `{other}`\n{HELP}")),
        }
    }
    Ok(o)
}

/// Rows of the corpus as (category, text).
fn read_corpus(path: &Path) -> AnyResult<Vec<(String, String)>> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("{}: {e} (run tools/fetch_assets.sh)", path.display()))?;
    let mut reader = csv::Reader::from_reader(bzip2::read::BzDecoder::new(file));
    let headers = reader.headers()?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or(format!("no `{name}` column"))
    };
    let (category, text) = (column("category")?, column("text")?);
    reader
        .records()
        .map(|r| {
            let r = r?;
            Ok((r[category].to_string(), r[text].to_string()))
        })
        .collect()
}

fn tokenize(
    tokenizer: &tokenizers::Tokenizer,
    rows: &[(String, usize)],
) -> AnyResult<Vec<Example>> {
    let texts: Vec<&str> = rows.iter().map(|(t, _)| t.as_str()).collect();
    let encodings = tokenizer.encode_batch(texts, true)?;
    Ok(encodings
        .iter()
        .zip(rows)
        .map(|(enc, (_, label))| Example {
            ids: enc.get_ids().iter().map(|&id| id as i64).collect(),
            label: *label,
        })
        .collect())
}

/// Splits labelled rows as the project's data split says: every fifth row is test.
type Rows = Vec<(String, usize)>;

fn split(rows: Rows) -> (Rows, Rows) {
    let (test, train): (Vec<_>, Vec<_>) =
        rows.into_iter().enumerate().partition(|(i, _)| i % 5 == 0);
    (
        train.into_iter().map(|(_, r)| r).collect(),
        test.into_iter().map(|(_, r)| r).collect(),
    )
}

fn progress_bar(len: usize, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// A new task: an adapter and a mean-pooled linear head of the same name, ready to train.
fn add_task(model: &mut BertModel, name: &str, config: &str) -> AnyResult<()> {
    model.add_adapter(name, AdapterConfig::load(config)?)?;
    model.add_head(name, HeadConfig::mean_pooled_linear(2))?;
    model.train_adapter(name)?;
    Ok(())
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn run() -> AnyResult<()> {
    let o = options()?;
    let device = device_by_name(&format!("{}+autodiff", o.device))?;
    device.seed(o.seed); // adapter/head initialisation and dropout masks
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;

    // Data: fresh (1) / rotten (0) rows in file order; test = index divisible by 5.
    let corpus = read_corpus(&o.data)?;
    let mut polarity: Vec<(String, usize)> = corpus
        .iter()
        .filter_map(|(c, t)| match c.as_str() {
            "fresh" => Some((t.clone(), 1)),
            "rotten" => Some((t.clone(), 0)),
            _ => None,
        })
        .collect();
    if let Some(limit) = o.limit {
        polarity.truncate(limit);
    }
    let (train_rows, test_rows) = split(polarity);
    let mut tokenizer = tokenizers::Tokenizer::from_file(o.model_dir.join("tokenizer.json"))?;
    tokenizer.with_padding(None); // the file pads to 128; batches are padded to their longest row instead
    tokenizer.with_truncation(Some(tokenizers::TruncationParams {
        max_length: o.max_len,
        ..Default::default()
    }))?;
    let train = tokenize(&tokenizer, &train_rows)?;
    let test = tokenize(&tokenizer, &test_rows)?;
    println!(
        "Rotten Tomatoes polarity: {} train / {} test rows, device {}",
        train.len(),
        test.len(),
        o.device
    );

    let base = BertModel::from_pretrained(&o.model_dir, &device)?;
    let config = TrainingConfig::new().with_learning_rate(o.lr);

    // 1. Pfeiffer adapter (or --adapter) + mean-pooled linear head.
    let mut model = base.clone();
    add_task(&mut model, "sentiment", &o.adapter)?;
    let summary = model.adapter_summary();
    let adapter_params = summary.adapters[0].num_params;
    println!("{summary}");
    let started = Instant::now();
    let (model, logs) = fit_all(
        model,
        "sentiment",
        &train,
        &test,
        o.epochs,
        &o,
        &config,
        &device,
    )?;
    let train_seconds = logs.iter().map(|l| l.train_seconds).sum::<f64>();
    let total_seconds = started.elapsed().as_secs_f64();
    let (test_accuracy, predictions) = evaluate(&model, "sentiment", &test, 64, &device)?;
    println!(
        "adapter: test accuracy {test_accuracy:.4}, {train_seconds:.0} s training ({total_seconds:.0} s with evaluation)"
    );

    // 2. Linear probe: the same head over the frozen encoder (no adapter). The encoder is frozen,
    //    so its pooled features are computed once and the head trains on them.
    let probe_accuracy = if o.task_only {
        None
    } else {
        let accuracy = linear_probe(&base, &train, &test, &o, &device)?;
        println!(
            "linear probe (frozen encoder, 10 epochs on cached features): test accuracy {accuracy:.4}"
        );
        Some(accuracy)
    };

    // 3. Save, report sizes, reload into a fresh model and compare predictions.
    let adapter_dir = o.out.join("sentiment");
    model.save_adapter(&adapter_dir, "sentiment")?;
    let adapter_bytes = file_size(&adapter_dir.join("adapter.safetensors"))
        + file_size(&adapter_dir.join("model_head.safetensors"));
    let model_bytes = file_size(&o.model_dir.join("model.safetensors"));
    println!(
        "saved {}: {:.1} KiB (adapter + head) vs {:.1} MiB for the model ({:.2}%)",
        adapter_dir.display(),
        adapter_bytes as f64 / 1024.0,
        model_bytes as f64 / 1048576.0,
        100.0 * adapter_bytes as f64 / model_bytes.max(1) as f64
    );
    let mut reloaded = BertModel::from_pretrained(&o.model_dir, &device)?;
    reloaded.load_adapter(&adapter_dir)?;
    reloaded.set_active_adapters("sentiment")?;
    let (_, reloaded_predictions) = evaluate(&reloaded, "sentiment", &test, 64, &device)?;
    let reload_identical = reloaded_predictions == predictions;
    println!("reloaded adapter gives identical predictions: {reload_identical}");

    plot(&o.out.join("training.svg"), &logs).map_err(|e| format!("plot: {e}"))?;
    println!("plot written to {}", o.out.join("training.svg").display());
    let mut summary = serde_json::json!({
        "adapter": o.adapter,
        "adapter_params": adapter_params,
        "test_accuracy": test_accuracy,
        "probe_accuracy": probe_accuracy,
        "train_seconds": train_seconds,
        "adapter_bytes": adapter_bytes,
        "model_bytes": model_bytes,
        "reload_identical": reload_identical,
        "epochs": o.epochs,
        "learning_rate": o.lr,
        "batch_size": o.batch_size,
        "max_len": o.max_len,
        "pad_to": o.pad_to,
        "batch_order_fnv1a": pipeline::batch_order_fnv1a(&train, o.batch_size, o.epochs),
        "device": o.device,
        "seed": o.seed,
        "train_rows": train.len(),
        "test_rows": test.len(),
        "epoch_test_accuracy": logs.iter().map(|l| l.eval_accuracy).collect::<Vec<_>>(),
    });
    if !o.task_only {
        summary["subjectivity_accuracy"] =
            second_task(model, &corpus, &tokenizer, &test, &o, &config, &device)?.into();
    }
    if let Some(path) = &o.summary_json {
        std::fs::write(path, serde_json::to_string_pretty(&summary).unwrap())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if !reload_identical {
        return Err("the reloaded adapter changed the predictions".into());
    }
    Ok(())
}

/// A second task on the same model, subjectivity (plot summaries vs reviews), then switching
/// between the two with `set_active_adapters`. Returns the subjectivity test accuracy.
fn second_task(
    model: BertModel,
    corpus: &[(String, String)],
    tokenizer: &tokenizers::Tokenizer,
    test: &[Example],
    o: &Options,
    config: &TrainingConfig,
    device: &Device,
) -> AnyResult<f64> {
    let plots: Vec<(String, usize)> = corpus
        .iter()
        .filter(|(c, _)| c == "plot")
        .map(|(_, t)| (t.clone(), 1))
        .collect();
    let reviews = corpus
        .iter()
        .filter(|(c, _)| c != "plot")
        .take(plots.len())
        .map(|(_, t)| (t.clone(), 0));
    let mut subjectivity: Vec<(String, usize)> = plots.iter().cloned().chain(reviews).collect();
    subjectivity.sort_by_key(|(t, _)| t.len()); // interleave the classes deterministically
    let (s_train, s_test) = split(subjectivity);
    let (s_train, s_test) = (
        tokenize(tokenizer, &s_train)?,
        tokenize(tokenizer, &s_test)?,
    );
    let mut model = model;
    add_task(&mut model, "subjectivity", "pfeiffer")?;
    let (mut model, _) = fit_all(
        model,
        "subjectivity",
        &s_train,
        &s_test,
        5,
        o,
        config,
        device,
    )?;
    let (subjectivity_accuracy, _) = evaluate(&model, "subjectivity", &s_test, 64, device)?;
    println!(
        "subjectivity adapter: test accuracy {subjectivity_accuracy:.4}\n{}",
        model.adapter_summary()
    );
    for task in ["sentiment", "subjectivity"] {
        model.set_active_adapters(task)?;
        let (accuracy, _) = evaluate(
            &model,
            task,
            if task == "sentiment" { test } else { &s_test },
            64,
            device,
        )?;
        println!("set_active_adapters({task:?}) → {task} test accuracy {accuracy:.4}");
    }

    Ok(subjectivity_accuracy)
}

/// Mean-pooled frozen-encoder features of `examples`, `[n, hidden]`, in inference mode.
fn features(base: &BertModel, examples: &[Example], device: &Device) -> AnyResult<Tensor<2>> {
    let model = base.valid();
    let device = device.clone().without_autodiff();
    let head = PredictionHead::new(
        HeadConfig::mean_pooled_linear(1),
        base.config().hidden_size,
        0.0,
        &device,
    )?;
    let order: Vec<usize> = (0..examples.len()).collect();
    let mut rows = Vec::new();
    for chunk in order.chunks(64) {
        let (input, _) = pipeline::make_batch(examples, chunk, 0, &device);
        let mask = input.attention_mask.clone();
        let hidden = model.forward(input).last_hidden_state;
        // the head's pooling, without its layer: the mean over real tokens
        rows.push(head.pool(hidden, mask));
    }
    Ok(Tensor::cat(rows, 0))
}

/// Trains a linear head on frozen features and returns its test accuracy.
fn linear_probe(
    base: &BertModel,
    train: &[Example],
    test: &[Example],
    o: &Options,
    device: &Device,
) -> AnyResult<f64> {
    let (train_x, test_x) = (
        features(base, train, device)?,
        features(base, test, device)?,
    );
    let train_x = train_x.to_device(device); // onto the autodiff device
    let mut head = PredictionHead::new(
        HeadConfig::mean_pooled_linear(2),
        base.config().hidden_size,
        0.0,
        device,
    )?
    .train();
    let labels = |ex: &[Example], device: &Device| {
        Tensor::<1, Int>::from_data(
            TensorData::new(
                ex.iter().map(|e| e.label as i64).collect::<Vec<_>>(),
                [ex.len()],
            ),
            device,
        )
    };
    let train_y = labels(train, device);
    let epochs = 10;
    let batches = pipeline::batches(train, o.batch_size, Some(7));
    let mut trainer = Trainer::new(
        &TrainingConfig::new().with_learning_rate(1e-2),
        epochs * batches.len(),
    );
    for _ in 0..epochs {
        for batch in &batches {
            let index = Tensor::<1, Int>::from_data(
                TensorData::new(
                    batch.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                    [batch.len()],
                ),
                device,
            );
            let x = train_x
                .clone()
                .select(0, index.clone())
                .unsqueeze_dim::<3>(1);
            let loss = cross_entropy(
                head.forward_sequence(x, None),
                train_y.clone().select(0, index),
            );
            head = trainer.step(head, loss);
        }
    }
    let plain = device.clone().without_autodiff();
    let logits = head
        .valid()
        .forward_sequence(test_x.unsqueeze_dim::<3>(1), None);
    Ok(correct_predictions(logits, labels(test, &plain)) as f64 / test.len() as f64)
}

/// Trains for `epochs` with one schedule over all of them, one progress bar per epoch.
#[allow(clippy::too_many_arguments)]
fn fit_all(
    model: BertModel,
    head: &str,
    train: &[Example],
    test: &[Example],
    epochs: usize,
    o: &Options,
    config: &TrainingConfig,
    device: &Device,
) -> AnyResult<(BertModel, Vec<EpochLog>)> {
    let steps = train.len().div_ceil(o.batch_size);
    let bar = progress_bar(steps * epochs, head);
    let result = fit(
        model,
        head,
        train,
        test,
        epochs,
        o.batch_size,
        o.pad_to,
        config,
        device,
        |step, m| {
            bar.inc(1);
            let message = format!(
                "loss {:.3} acc {:.3} {:.0} ex/s",
                m.loss(),
                m.accuracy(),
                m.examples_per_second()
            );
            if bar.is_hidden() && (step % 25 == 0 || step == steps) {
                // no terminal (CI logs): a plain line now and then
                eprintln!("{head}: step {step}/{steps} {message}");
            }
            bar.set_message(message);
        },
    )?;
    let accuracies: Vec<String> = result
        .1
        .iter()
        .map(|l| format!("{:.3}", l.eval_accuracy))
        .collect();
    bar.finish_with_message(format!(
        "test accuracy per epoch: {}",
        accuracies.join(", ")
    ));
    Ok(result)
}

/// Training loss per step and test accuracy per epoch, as SVG.
fn plot(path: &Path, logs: &[EpochLog]) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let losses: Vec<f64> = logs
        .iter()
        .flat_map(|l| l.step_losses.iter().copied())
        .collect();
    let steps_per_epoch = logs.first().map_or(1, |l| l.step_losses.len()).max(1);
    // moving average over 10 steps
    let smooth: Vec<(f64, f64)> = (0..losses.len())
        .map(|i| {
            let from = i.saturating_sub(9);
            (
                i as f64,
                losses[from..=i].iter().sum::<f64>() / (i - from + 1) as f64,
            )
        })
        .collect();
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_loss = losses.iter().copied().fold(0.1, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Pfeiffer adapter on all-MiniLM-L6-v2 (Rotten Tomatoes)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .right_y_label_area_size(50)
        .build_cartesian_2d(0f64..losses.len().max(1) as f64, 0f64..max_loss)?
        .set_secondary_coord(0f64..losses.len().max(1) as f64, 0.4f64..1.0);
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("training loss")
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("test accuracy")
        .draw()?;
    chart
        .draw_series(LineSeries::new(smooth, &BLUE))?
        .label("training loss (10-step mean)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    let accuracy: Vec<(f64, f64)> = logs
        .iter()
        .enumerate()
        .map(|(e, l)| (((e + 1) * steps_per_epoch) as f64, l.eval_accuracy))
        .collect();
    chart
        .draw_secondary_series(LineSeries::new(accuracy.clone(), RED.stroke_width(2)))?
        .label("test accuracy (per epoch)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart.draw_secondary_series(accuracy.iter().map(|p| Circle::new(*p, 4, RED.filled())))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sentiment: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
