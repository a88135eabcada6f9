"""Baseline: fine-tune a sequence classifier on a CSV with Trainer, the way the docs show it.

    python finetune_trainer.py train.csv MODEL --output DIR --epochs 1 --batch-size 16

Holds out 10% for validation (seeded, stratified), evaluates accuracy and checkpoints each
epoch, keeps the best checkpoint and saves it: the same work as ``llmtool finetune --task
classify`` with its defaults.
"""

import argparse

import numpy as np
from datasets import ClassLabel, load_dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

parser = argparse.ArgumentParser()
parser.add_argument("csv")
parser.add_argument("model")
parser.add_argument("--output", required=True)
parser.add_argument("--epochs", type=float, default=1)
parser.add_argument("--max-steps", type=int, default=-1)
parser.add_argument("--batch-size", type=int, default=16)
parser.add_argument("--max-length", type=int, default=128)
parser.add_argument("--lr", type=float, default=5e-5)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--device", default="cpu")
args = parser.parse_args()

data = load_dataset("csv", data_files=args.csv)["train"]
labels = sorted(set(data["label"]))
data = data.cast_column("label", ClassLabel(names=[str(x) for x in labels]))
split = data.train_test_split(test_size=0.1, seed=args.seed, stratify_by_column="label")

tokenizer = AutoTokenizer.from_pretrained(args.model)
split = split.map(lambda batch: tokenizer(batch["sentence"], truncation=True, max_length=args.max_length), batched=True)
model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(labels))


def accuracy(prediction):
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


training_args = TrainingArguments(
    output_dir=args.output,
    num_train_epochs=args.epochs,
    max_steps=args.max_steps,
    per_device_train_batch_size=args.batch_size,
    per_device_eval_batch_size=args.batch_size,
    learning_rate=args.lr,
    seed=args.seed,
    eval_strategy="epoch",
    save_strategy="epoch",
    load_best_model_at_end=True,
    metric_for_best_model="accuracy",
    save_total_limit=2,
    logging_steps=10,
    report_to="none",
    use_cpu=args.device == "cpu",
)
trainer = Trainer(
    model=model,
    args=training_args,
    train_dataset=split["train"],
    eval_dataset=split["test"],
    processing_class=tokenizer,
    data_collator=DataCollatorWithPadding(tokenizer),
    compute_metrics=accuracy,
)
trainer.train()
trainer.save_model(args.output)
print(trainer.evaluate())
