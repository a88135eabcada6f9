"""Baseline: train a translation model from scratch with Seq2SeqTrainer, the way the Transformers docs show it.

    python seq2seq_trainer.py pairs.txt --tokenizer DIR --output DIR --max-steps N --batch-size B \
        [--layers 2 --hidden 128 --heads 4] [--source-field 2 --target-field 1]

Reads TAB-separated pairs (Tatoeba's ``fra-eng.txt`` layout), tokenizes them with the given tokenizer
(``text_target=`` for the labels), builds a MarianMTModel of the given shape with new weights and
trains it with ``Seq2SeqTrainer`` and ``DataCollatorForSeq2Seq``: Transformers' own defaults for
everything not given here (learning rate 5e-5, no warm-up, linear decay, no weight decay). Saves
the model with the tokenizer. ``bench/seq2seq_learns.py`` runs it with llmtool's model shape,
tokenizer, batch and step count, so only what each one chooses by itself differs.
"""

import argparse
from pathlib import Path

from datasets import Dataset
from transformers import (
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    MarianConfig,
    MarianMTModel,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
)

parser = argparse.ArgumentParser()
parser.add_argument("pairs")
parser.add_argument("--tokenizer", required=True)
parser.add_argument("--output", required=True)
parser.add_argument("--max-steps", type=int, required=True)
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--lr", type=float, default=5e-5)
parser.add_argument("--layers", type=int, default=2)
parser.add_argument("--hidden", type=int, default=128)
parser.add_argument("--heads", type=int, default=4)
parser.add_argument("--max-length", type=int, default=128)
parser.add_argument("--source-field", type=int, default=1)
parser.add_argument("--target-field", type=int, default=2)
parser.add_argument("--seed", type=int, default=42)
args = parser.parse_args()

lines = Path(args.pairs).read_text(encoding="utf-8").splitlines()
rows = [line.split("\t") for line in lines if line.strip()]
data = Dataset.from_dict(
    {"source": [r[args.source_field - 1] for r in rows], "target": [r[args.target_field - 1] for r in rows]}
)
tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)


def encode(batch):
    return tokenizer(batch["source"], text_target=batch["target"], truncation=True, max_length=args.max_length)


data = data.map(encode, batched=True, remove_columns=["source", "target"])
config = MarianConfig(
    vocab_size=len(tokenizer),
    d_model=args.hidden,
    encoder_layers=args.layers,
    decoder_layers=args.layers,
    encoder_attention_heads=args.heads,
    decoder_attention_heads=args.heads,
    encoder_ffn_dim=4 * args.hidden,
    decoder_ffn_dim=4 * args.hidden,
    max_position_embeddings=512,
    pad_token_id=tokenizer.pad_token_id,
    eos_token_id=tokenizer.eos_token_id,
    decoder_start_token_id=tokenizer.pad_token_id,
    forced_eos_token_id=tokenizer.eos_token_id,
)
model = MarianMTModel(config)

training_args = Seq2SeqTrainingArguments(
    output_dir=args.output,
    max_steps=args.max_steps,
    per_device_train_batch_size=args.batch_size,
    learning_rate=args.lr,
    seed=args.seed,
    save_strategy="no",
    logging_steps=100,
    report_to="none",
    use_cpu=True,
)
trainer = Seq2SeqTrainer(
    model=model,
    args=training_args,
    train_dataset=data,
    processing_class=tokenizer,
    data_collator=DataCollatorForSeq2Seq(tokenizer, model=model),
)
trainer.train()
trainer.save_model(args.output)
