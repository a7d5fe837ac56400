"""Generate the zero-shot example's small data set (run once; its output is committed).

Customer messages are written from templates by this script, so the data is ours (Apache-2.0,
like the rest of the repository) and needs no download. Some templates mention words of another
topic on purpose ("charged twice for shipping" is a billing question): the label names alone
get those wrong, a few annotations teach them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

THINGS = [
    "order",
    "parcel",
    "package",
    "subscription",
    "purchase",
    "headphones",
    "laptop",
    "blender",
]
DAYS = ["Monday", "yesterday", "last week", "three days ago", "this morning", "on Friday"]
TEMPLATES = {
    "Billing": [
        "I was charged twice for my {thing}.",
        "Why is there an extra fee on my invoice from {day}?",
        "Can I get a refund for the {thing} I returned {day}?",
        "My card was declined but the money still left my account.",
        "Please send me a VAT invoice for my {thing}.",
        "You charged me for shipping even though it should be free.",
        "The discount code was not applied to my {thing}, I paid full price.",
        "How do I change the credit card you bill every month?",
        "I cancelled my {thing} but you billed me again {day}.",
        "The price on the receipt is higher than on the website.",
    ],
    "Shipping": [
        "Where is my {thing}? It was supposed to arrive {day}.",
        "The tracking number for my {thing} does not work.",
        "My {thing} arrived damaged, the box was crushed.",
        "Can you deliver my {thing} to a different address?",
        "The courier left my {thing} at the wrong house {day}.",
        "How long does delivery to Canada take?",
        "My {thing} has been stuck in customs since {day}.",
        "Only half of my {thing} was in the box.",
        "Can I pick up my {thing} at a store instead of delivery?",
        "The delivery driver never came {day}.",
    ],
    "Technical": [
        "The app crashes every time I open my {thing} page.",
        "I get error 500 when I try to check out.",
        "The website is very slow since {day}.",
        "The checkout button does nothing when I click it.",
        "Your app will not install on my phone.",
        "Pictures of the {thing} do not load on the product page.",
        "The search shows no results, even for a {thing}.",
        "Notifications stopped working after the update {day}.",
        "The page goes blank when I add a {thing} to the cart.",
        "The invoice PDF download link gives a 404 page.",
    ],
    "Account": [
        "I forgot my password and the reset email never arrives.",
        "How do I change the email address on my profile?",
        "Please delete my account and all my data.",
        "Someone logged into my account {day}, I did not do it.",
        "I cannot sign in with my username any more.",
        "How do I turn on two-factor authentication?",
        "My account was locked after too many login attempts.",
        "Can I merge my two accounts into one?",
        "I want to change my username.",
        "The verification code for my login never comes.",
    ],
}
OPENERS = ["", "Hi, ", "Hello, ", "Hey team, ", "Good morning. ", "Urgent: "]
ENDINGS = ["", " Thanks.", " Please help.", " Thank you!", " Any idea?"]


def main() -> None:
    rng = random.Random(20261125)
    rows, seen = [], set()
    labels = list(TEMPLATES)
    while len(rows) < 300:
        label = labels[len(rows) % len(labels)]
        template = rng.choice(TEMPLATES[label])
        body = template.format(thing=rng.choice(THINGS), day=rng.choice(DAYS))
        text = f"{rng.choice(OPENERS)}{body}{rng.choice(ENDINGS)}"
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    rng.shuffle(rows)
    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    for name, part in {"train": rows[:200], "holdout": rows[200:]}.items():
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for row in part:
                handle.write(json.dumps(row) + "\n")
    tasks = [{"data": {"text": row["text"]}} for row in rows[200:220]]
    (Path(__file__).parent / "tasks.json").write_text(json.dumps(tasks, indent=1) + "\n")


if __name__ == "__main__":
    main()
