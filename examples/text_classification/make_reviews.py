"""Writes reviews.csv: 800 short synthetic product reviews (text, label) in four classes,
deterministic (seeded), so the example needs no download.

    python examples/text_classification/make_reviews.py [--rows 800] [--out reviews.csv]

Each review is a template filled with words typical of its class (electronics, books,
kitchen, clothing) plus words shared by all; one in six borrows an item from another class,
so the task is learnable but not trivial, and stop words ("the", "it", "was") are everywhere.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLASSES = {
    "electronics": {
        "item": ["phone", "laptop", "charger", "headphones", "tablet", "speaker", "camera"],
        "part": ["battery", "screen", "cable", "bluetooth", "keyboard", "sound", "firmware"],
        "verb": ["charges", "connects", "boots", "pairs", "streams", "syncs"],
    },
    "books": {
        "item": ["novel", "paperback", "cookbook", "biography", "thriller", "textbook"],
        "part": ["plot", "ending", "characters", "chapters", "author", "prose", "cover"],
        "verb": ["reads", "unfolds", "flows", "drags", "grips", "explains"],
    },
    "kitchen": {
        "item": ["blender", "kettle", "pan", "knife", "toaster", "mixer", "coffee maker"],
        "part": ["blade", "handle", "lid", "motor", "nonstick coating", "heating", "bowl"],
        "verb": ["heats", "blends", "slices", "boils", "cleans", "grinds"],
    },
    "clothing": {
        "item": ["jacket", "shirt", "jeans", "sneakers", "dress", "sweater", "socks"],
        "part": ["fabric", "stitching", "zipper", "fit", "sleeves", "collar", "color"],
        "verb": ["fits", "washes", "stretches", "shrinks", "wears", "feels"],
    },
}
OPINIONS = ["great", "terrible", "decent", "excellent", "disappointing", "solid", "cheap"]
TEMPLATES = [
    "The {item} arrived yesterday and the {part} is {opinion}.",
    "I bought this {item} for my sister; it {verb} well but the {part} could be better.",
    "{Opinion} {item}. The {part} was the first thing I noticed.",
    "After a month the {item} still {verb} fine, although the {part} is {opinion}.",
    "Would not buy this {item} again: the {part} {verb} badly and it was {opinion}.",
    "My {item} {verb} exactly as described and the {part} is {opinion} for the price.",
    "Honestly the {part} of this {item} is {opinion}, and it {verb} better than my old one.",
    "Returned the {item} because the {part} was {opinion}.",
]


def review(rng: random.Random, label: str) -> str:
    words = CLASSES[label]
    if rng.random() < 1 / 6:  # a confusable review: one slot from another class
        other = CLASSES[rng.choice([name for name in CLASSES if name != label])]
        words = {**words, "part": other["part"]}
    opinion = rng.choice(OPINIONS)
    return rng.choice(TEMPLATES).format(
        item=rng.choice(words["item"]),
        part=rng.choice(words["part"]),
        verb=rng.choice(words["verb"]),
        opinion=opinion,
        Opinion=opinion.capitalize(),
    )


def write_reviews(path: Path, *, num_rows: int = 800, seed: int = 0) -> Path:
    """Write ``num_rows`` reviews, labels in turn (balanced), to a CSV with a header."""
    rng = random.Random(seed)
    labels = list(CLASSES)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for index in range(num_rows):
            label = labels[index % len(labels)]
            writer.writerow([review(rng, label), label])
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--out", type=Path, default=HERE / "reviews.csv")
    args = parser.parse_args()
    print(write_reviews(args.out, num_rows=args.rows))
