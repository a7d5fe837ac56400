"""Generate the example's small sentiment data set (run once; its output is committed).

The sentences are written from templates by this script, so the data is ours (Apache-2.0,
like the rest of the repository) and needs no download.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SUBJECTS = [
    "the product",
    "this phone",
    "the service",
    "our hotel room",
    "the delivery",
    "the food",
    "this laptop",
    "the support team",
    "the app",
    "the movie",
    "the book",
    "the headphones",
    "the checkout",
    "the staff",
    "the update",
    "the battery",
    "the camera",
    "the seats",
]
POSITIVE = [
    "is excellent",
    "works great",
    "was a delight",
    "exceeded my expectations",
    "is wonderful",
    "made me happy",
    "is fast and reliable",
    "is worth every penny",
    "was friendly and helpful",
    "is amazing",
    "feels solid and well made",
    "was perfect",
    "is a pleasure to use",
    "is superb",
]
NEGATIVE = [
    "is terrible",
    "broke after a day",
    "was a disappointment",
    "is slow and buggy",
    "made me angry",
    "is a waste of money",
    "was rude and unhelpful",
    "is awful",
    "stopped working",
    "feels cheap and flimsy",
    "was a nightmare",
    "is painfully slow",
    "never arrived",
    "is useless",
]
OPENERS = ["", "honestly, ", "i think ", "overall ", "to be fair ", "sadly ", "wow, ", "well, "]
ENDINGS = ["", ".", "!", " overall.", " to be honest.", ", as expected.", " this time."]


def sentence(rng: random.Random, label: str) -> str:
    phrase = rng.choice(POSITIVE if label == "Positive" else NEGATIVE)
    return f"{rng.choice(OPENERS)}{rng.choice(SUBJECTS)} {phrase}{rng.choice(ENDINGS)}".capitalize()


def main() -> None:
    rng = random.Random(20261125)
    rows = []
    seen = set()
    while len(rows) < 320:
        label = rng.choice(["Positive", "Negative"])
        text = sentence(rng, label)
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    out = Path(__file__).parent / "data"
    splits = {"seed": rows[:12], "train": rows[12:232], "holdout": rows[232:]}
    for name, part in splits.items():
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for row in part:
                handle.write(json.dumps(row) + "\n")
    tasks = [{"data": {"text": row["text"]}} for row in splits["holdout"][:20]]
    (Path(__file__).parent / "tasks.json").write_text(json.dumps(tasks, indent=1) + "\n")


if __name__ == "__main__":
    main()
