"""The main job (examples/sentiment --task-only) done by AdapterHub, for a side-by-side timing.

Same data and split (fresh/rotten rows of the Rotten Tomatoes corpus in file order, every fifth row
test), same tokenizer file and truncation, the example's exact batches (length-sorted within
chunks of 50 batches, order shuffled by the same seeded LCG; the FNV-1a hash of the batch order is
printed and, with --rust-summary, checked against the Rust run's), the same adapter config
string, the same head (one Linear over mean-pooled token states), AdamW with the example's
settings (lr, weight decay 0.01, eps 1e-8, constant rate), the same number of epochs and threads.
Training seconds exclude the evaluation after each epoch, as in the example.

    python tools/sentiment_reference.py --model-dir DIR --data FILE [--pad-to 64] \
        [--rust-summary target/sentiment/summary.json] --summary-json OUT.json
"""

import argparse
import bz2
import csv
import json
import time

import torch
from tokenizers import Tokenizer
from transformers import BertModel

import adapters

MASK64 = (1 << 64) - 1


def shuffle(items, seed):
    """The example's Fisher-Yates with a 64-bit LCG (pipeline.rs `shuffle`)."""
    state = (seed * 6364136223846793005 + 1442695040888963407) & MASK64
    for i in range(len(items) - 1, 0, -1):
        state = (state * 6364136223846793005 + 1442695040888963407) & MASK64
        j = (state >> 33) % (i + 1)
        items[i], items[j] = items[j], items[i]


def batches(examples, batch_size, seed):
    """pipeline.rs `batches`: sorted by length within chunks of 50 batches, order shuffled."""
    order = list(range(len(examples)))
    if seed is not None:
        shuffle(order, seed)
    chunk = batch_size * 50
    out = []
    for start in range(0, len(order), chunk):
        window = sorted(order[start : start + chunk], key=lambda i: len(examples[i][0]))
        out.extend(window[k : k + batch_size] for k in range(0, len(window), batch_size))
    if seed is not None:
        shuffle(out, seed ^ 0x9E3779B9)
    return out


def batch_order_fnv1a(examples, batch_size, epochs):
    value = 0xCBF29CE484222325
    for epoch in range(epochs):
        for batch in batches(examples, batch_size, epoch + 1):
            for index in list(batch) + [MASK64]:
                for byte in index.to_bytes(8, "little"):
                    value = ((value ^ byte) * 0x100000001B3) & MASK64
    return f"{value:016x}"


def read_split(path, limit):
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    labels = {"fresh": 1, "rotten": 0}
    polarity = [(r["text"], labels[r["category"]]) for r in rows if r["category"] in labels]
    if limit is not None:
        polarity = polarity[:limit]
    train = [r for i, r in enumerate(polarity) if i % 5 != 0]
    test = [r for i, r in enumerate(polarity) if i % 5 == 0]
    return train, test


def tokenize(tokenizer, rows):
    encodings = tokenizer.encode_batch([t for t, _ in rows], add_special_tokens=True)
    return [(e.ids, label) for e, (_, label) in zip(encodings, rows)]


def make_batch(examples, indices, pad_to):
    width = max(max(len(examples[i][0]) for i in indices), pad_to)
    ids = torch.zeros((len(indices), width), dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        tokens = examples[i][0]
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    labels = torch.tensor([examples[i][1] for i in indices])
    return ids, mask, labels


class Classifier(torch.nn.Module):
    """The encoder with its adapter, then HeadConfig::mean_pooled_linear(2)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(encoder.config.hidden_size, 2)

    def forward(self, ids, mask):
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1)
        return self.head(pooled)


def evaluate(model, examples, batch_size):
    model.eval()
    correct = 0
    with torch.no_grad():
        for batch in batches(examples, batch_size, None):
            ids, mask, labels = make_batch(examples, batch, 0)
            correct += (model(ids, mask).argmax(-1) == labels).sum().item()
    model.train()
    return correct / len(examples)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--adapter", default="pfeiffer[reduction_factor=16]")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--pad-to", type=int, default=0)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rust-summary", help="the example's --summary-json, to check the batches")
    ap.add_argument("--summary-json")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_rows, test_rows = read_split(args.data, args.limit)
    tokenizer = Tokenizer.from_file(f"{args.model_dir}/tokenizer.json")
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=args.max_len)
    train, test = tokenize(tokenizer, train_rows), tokenize(tokenizer, test_rows)
    order_hash = batch_order_fnv1a(train, args.batch_size, args.epochs)
    print(f"{len(train)} train / {len(test)} test rows, batch order {order_hash}")
    if args.rust_summary:
        with open(args.rust_summary) as f:
            rust = json.load(f)
        if rust.get("batch_order_fnv1a") != order_hash:
            raise SystemExit(f"batch order differs from the Rust run's: {rust.get('batch_order_fnv1a')}")

    encoder = BertModel.from_pretrained(args.model_dir, add_pooling_layer=False)
    adapters.init(encoder)
    encoder.add_adapter("sentiment", config=args.adapter)
    encoder.train_adapter("sentiment")
    model = Classifier(encoder)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.01, eps=1e-8)
    loss_fn = torch.nn.CrossEntropyLoss()

    train_seconds, accuracies = 0.0, []
    for epoch in range(args.epochs):
        started = time.perf_counter()
        for batch in batches(train, args.batch_size, epoch + 1):
            ids, mask, labels = make_batch(train, batch, args.pad_to)
            loss = loss_fn(model(ids, mask), labels)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
        train_seconds += time.perf_counter() - started
        accuracies.append(evaluate(model, test, args.batch_size * 2))
        print(f"epoch {epoch + 1}: test accuracy {accuracies[-1]:.4f}, {train_seconds:.1f} s training")

    summary = {
        "implementation": f"adapters {adapters.__version__}, torch {torch.__version__}",
        "adapter": args.adapter,
        "adapter_params": sum(p.numel() for p in trainable) - sum(p.numel() for p in model.head.parameters()),
        "test_accuracy": accuracies[-1],
        "train_seconds": train_seconds,
        "epochs": args.epochs,
        "learning_rate": args.lr,
        "batch_size": args.batch_size,
        "max_len": args.max_len,
        "pad_to": args.pad_to,
        "threads": args.threads,
        "seed": args.seed,
        "batch_order_fnv1a": order_hash,
        "epoch_test_accuracy": accuracies,
    }
    print(json.dumps(summary, indent=2))
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
