"""Baseline: fine-tune a token classifier on CoNLL files with Trainer, the way run_ner.py does it.

    python ner_trainer.py train.txt MODEL --output DIR --max-steps 300

The file's tags are used as written (the last column; ``-DOCSTART-`` lines skipped), the first subword
of each word labelled and the others -100 (run_ner's default, ``label_all_tokens=False``), Trainer's
defaults otherwise (learning rate 5e-5, batch 8, no warm-up), the last model saved.
"""

import argparse

from datasets import Dataset
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorForTokenClassification,
    Trainer,
    TrainingArguments,
)

parser = argparse.ArgumentParser()
parser.add_argument("conll")
parser.add_argument("model")
parser.add_argument("--output", required=True)
parser.add_argument("--max-steps", type=int, default=-1)
parser.add_argument("--epochs", type=float, default=3)
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--lr", type=float, default=5e-5)
parser.add_argument("--seed", type=int, default=42)
args = parser.parse_args()


def read_conll(path):
    sentences, words, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines:
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sentences.append({"tokens": words, "tags": tags})
            words, tags = [], []
            continue
        words.append(fields[0])
        tags.append(fields[-1])
    if words:
        sentences.append({"tokens": words, "tags": tags})
    return sentences


rows = read_conll(args.conll)
labels = sorted({t for row in rows for t in row["tags"]})
label2id = {label: i for i, label in enumerate(labels)}
tokenizer = AutoTokenizer.from_pretrained(args.model)


def tokenize_and_align(batch):
    encoded = tokenizer(batch["tokens"], truncation=True, is_split_into_words=True)
    all_labels = []
    for i, tags in enumerate(batch["tags"]):
        previous, ids = None, []
        for word in encoded.word_ids(batch_index=i):
            ids.append(-100 if word is None or word == previous else label2id[tags[word]])
            previous = word
        all_labels.append(ids)
    encoded["labels"] = all_labels
    return encoded


train = Dataset.from_list(rows).map(tokenize_and_align, batched=True, remove_columns=["tokens", "tags"])
model = AutoModelForTokenClassification.from_pretrained(
    args.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label2id
)
training_args = TrainingArguments(
    output_dir=args.output,
    num_train_epochs=args.epochs,
    max_steps=args.max_steps,
    per_device_train_batch_size=args.batch_size,
    learning_rate=args.lr,
    seed=args.seed,
    save_strategy="no",
    logging_steps=50,
    report_to="none",
    use_cpu=True,
)
trainer = Trainer(
    model=model,
    args=training_args,
    train_dataset=train,
    processing_class=tokenizer,
    data_collator=DataCollatorForTokenClassification(tokenizer),
)
trainer.train()
trainer.save_model(args.output)
