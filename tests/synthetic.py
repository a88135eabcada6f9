"""Small learnable data sets made from templates, for training tests on tiny models.

Sentiment: "<subject> is [adverb] <adjective>", where the adjective alone decides the label. The
words are in the tiny BERT's vocabulary, so a two-layer model learns it in a few hundred steps.
Stories: a little grammar of fairy-tale sentences that a causal or masked LM learns quickly.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

POSITIVE = ["good", "great", "happy", "love", "wonderful", "nice"]
NEGATIVE = ["bad", "terrible", "sad", "hate", "awful", "boring"]
SUBJECTS = ["the movie", "this film", "the story", "my day", "the house", "your dog", "the city", "that king"]
ADVERBS = ["", "very ", "really ", "so "]


def sentiment_rows(n: int, seed: int, labels: tuple[str, str] = ("negative", "positive")) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        adjective = rng.choice(POSITIVE if positive else NEGATIVE)
        rows.append((f"{rng.choice(SUBJECTS)} is {rng.choice(ADVERBS)}{adjective}", labels[positive]))
    return rows


def write_sentiment_csv(path: Path, n: int, seed: int, header: tuple[str, str] = ("text", "label")) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(sentiment_rows(n, seed))
    return path


NAMES = ["the king", "the queen", "a dog", "the cat", "my house", "your city"]
VERBS = ["lived in", "loved", "went to", "saw"]
PLACES = ["the castle", "paris", "berlin", "rome", "the house", "tokyo"]


def story_lines(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"once upon a time {rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(PLACES)}." for _ in range(n)]


def write_stories(path: Path, n: int, seed: int) -> Path:
    path.write_text("\n".join(story_lines(n, seed)) + "\n", encoding="utf-8")
    return path
