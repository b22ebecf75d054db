#!/usr/bin/env python3
"""A tiny random Llama (or, with --arch gpt2, GPT-2) with a byte-level BPE tokenizer trained on the Rotten Tomatoes reviews, for running
examples/causal_lm.rs where no small pretrained decoder can be fetched (none ships on PyPI).

    python tools/make_tiny_decoder.py --corpus CACHE/data/rotten_tomatoes_corpus.csv.bz2 --out DIR [--arch gpt2]

DIR gets config.json, model.safetensors (transformers 4.57.6 `LlamaForCausalLM`, hidden 64, 2 layers, 4 query and
2 key/value heads, tied embeddings, transformers' random init with seed 0; GPT-2: hidden 64, 2 blocks, 4 heads) and tokenizer.json (byte-level BPE,
vocabulary 1024, `<pad>` 0, `<s>` 1, `</s>` 2). The weights are random: the example's numbers on it show the
pipeline works, not what a pretrained model learns.
"""

import argparse
import bz2
import csv
import io
import os

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

VOCAB = 1024


def reviews(path, limit=20000):
    with bz2.open(path, "rt", encoding="utf-8") as f:
        reader = csv.DictReader(io.StringIO(f.read()))
        return [row["text"] for _, row in zip(range(limit), reader)]


def train_tokenizer(texts):
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts + ["Review: Sentiment: fresh rotten"] * 50, trainer)
    return tokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--arch", choices=["llama", "gpt2"], default="llama")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tokenizer = train_tokenizer(reviews(args.corpus))
    tokenizer.save(os.path.join(args.out, "tokenizer.json"))
    torch.manual_seed(0)
    if args.arch == "gpt2":
        config = GPT2Config(vocab_size=tokenizer.get_vocab_size(), n_positions=256, n_embd=64, n_layer=2, n_head=4,
                            pad_token_id=0, bos_token_id=1, eos_token_id=2)
        GPT2LMHeadModel(config).save_pretrained(args.out, safe_serialization=True)
        print("tiny GPT-2: vocabulary {} in {}".format(config.vocab_size, args.out))
        return
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(args.out, safe_serialization=True)
    print("tiny decoder: vocabulary {}, {} files in {}".format(config.vocab_size, len(os.listdir(args.out)), args.out))


if __name__ == "__main__":
    main()
