"""Generate the NER example's small data set (run once; its output is committed).

Sentences come from templates written for this example and names made up from the lists below,
so the data is ours (Apache-2.0, like the rest of the repository) and needs no download. Some
names are non-ASCII (accents, CJK) and some sentences carry emoji, so that span offsets are
exercised where Python and JavaScript count characters differently.

A few names of each kind appear only in the held-out split: the held-out score then measures
whether the model learned contexts and word shapes, not just the list of names.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

FIRST = [
    "Anna", "Marcus", "Priya", "Tomás", "Zoë", "Søren", "Chloé", "Łukasz", "Björn", "Aïsha",
    "Mateo", "Nadia", "Yusuf", "Elena", "Jonas", "Hana", "Rafael", "Olu", "王芳", "Thảo",
]  # fmt: skip
LAST = [
    "Novak", "Okafor", "Lindqvist", "García", "Müller", "Dubois", "Kowalski", "Sato",
    "Haddad", "Petrov", "Ferreira", "Nakamura", "Østergaard", "Brennan",
]  # fmt: skip
ORGS = [
    "Nordwind Logistics", "Acme Robotics", "Bluefin Analytics", "Sunrise Bakery", "Kestrel Bank",
    "Orbital Dynamics", "Café Lumière", "Zeta Pharma", "Grünfeld AG", "Maple Street Studios",
    "Pinecone Labs", "Riverside Clinic",
]  # fmt: skip
PLACES = [
    "Lisbon", "Nairobi", "Zürich", "São Paulo", "Kraków", "Reykjavík", "Montréal", "東京",
    "Buenos Aires", "Oslo", "Cape Town", "Málaga", "Seoul", "Toronto",
]  # fmt: skip
# Only in the held-out split.
UNSEEN = {
    "FIRST": ["Ingrid", "Kenji", "李娜", "Renée"],
    "LAST": ["Szabó", "Adeyemi"],
    "ORG": ["Helix Labs", "Tōkai Electric"],
    "LOC": ["Hanoi", "Québec", "Dakar"],
}

TEMPLATES = [
    "{PER} joined {ORG} in {LOC} last spring.",
    "Yesterday {PER} flew from {LOC} to {LOC}.",
    "{ORG} opened a new office in {LOC}.",
    "The CEO of {ORG}, {PER}, spoke in {LOC} on Monday.",
    "{PER} works for {ORG}.",
    "According to {PER}, {ORG} will hire 200 engineers.",
    "Shares of {ORG} rose 4% after the news from {LOC}.",
    "{PER} and {PER} met at the {ORG} headquarters.",
    "We visited {LOC} in June and loved it 🎉",
    "{PER} was born in {LOC}.",
    "Customers in {LOC} can now order from {ORG}.",
    "Thanks to {PER} for the great talk! 👏",
    "{ORG} signed a deal with {ORG} on Friday.",
    "The weather in {LOC} was terrible this week ☔",
    "Dr. {PER} moved to {LOC} to lead research at {ORG}.",
    "Ask {PER} about the {LOC} trip.",
    "{PER} left {ORG} after ten years.",
    "Last night {ORG} announced record sales in {LOC}.",
    "Our team in {LOC} welcomes {PER} 😊",
    "Is {PER} still at {ORG}?",
    "The conference moves from {LOC} to {LOC} next year.",
    "🎉 Congratulations to {PER} on the new role at {ORG}!",
    "📍 {LOC}: {ORG} is hiring.",
    "Nobody answered the phone at the office today.",
    "The meeting moved to Thursday afternoon.",
    "Please send the Report by Friday.",
]
LABELS = {"PER": "PER", "ORG": "ORG", "LOC": "LOC"}


def person(rng: random.Random, first: list[str], last: list[str]) -> str:
    name = rng.choice(first)
    if "\u4e00" <= name[0] <= "\u9fff" or rng.random() < 0.25:  # CJK names stand alone
        return name
    return f"{name} {rng.choice(last)}"


def fill(rng: random.Random, template: str, pools: dict[str, list[str]]) -> dict:
    """Fill a template left to right, recording each entity's code point offsets."""
    text, spans, pos = "", [], 0
    for match in re.finditer(r"\{(PER|ORG|LOC)\}", template):
        text += template[pos : match.start()]
        kind = match.group(1)
        value = (
            person(rng, pools["FIRST"], pools["LAST"]) if kind == "PER" else rng.choice(pools[kind])
        )
        spans.append({"start": len(text), "end": len(text) + len(value), "label": LABELS[kind]})
        text += value
        pos = match.end()
    text += template[pos:]
    for span in spans:
        assert text[span["start"] : span["end"]]
    return {"text": text, "spans": spans}


def main() -> None:
    rng = random.Random(20261125)
    seen_pools = {"FIRST": FIRST, "LAST": LAST, "ORG": ORGS, "LOC": PLACES}
    mixed_pools = {k: v + UNSEEN[k] for k, v in seen_pools.items()}
    rows: list[dict] = []
    seen: set[str] = set()

    def take(count: int, pools: dict[str, list[str]]) -> list[dict]:
        out = []
        while len(out) < count:
            row = fill(rng, rng.choice(TEMPLATES), pools)
            if row["text"] not in seen:
                seen.add(row["text"])
                out.append(row)
        return out

    seed = take(10, seen_pools)
    train = take(240, seen_pools)
    holdout = take(80, mixed_pools)
    rows = seed + train + holdout
    assert len(rows) == len(seen)
    out = Path(__file__).parent / "data"
    out.mkdir(exist_ok=True)
    for name, part in {"seed": seed, "train": train, "holdout": holdout}.items():
        with (out / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for row in part:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    tasks = [{"data": {"text": row["text"]}} for row in holdout[:20]]
    (Path(__file__).parent / "tasks.json").write_text(
        json.dumps(tasks, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
