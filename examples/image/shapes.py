"""Small noisy pictures of circles, squares and triangles, drawn by this script.

Every picture is made here from a seeded random generator (the data is ours, Apache-2.0, and
needs no download): a random background colour with pixel noise, one shape of a contrasting
colour, random size, position and rotation. `python shapes.py` writes the 60 PNGs in images/
(the pool a user uploads to Label Studio and annotates) and tasks.json; the model generates its
seed and held-out pictures with `seed_set()` and `holdout_set()`, the same on every machine.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("Circle", "Square", "Triangle")
SIZE = 32
_SCALE = 4  # drawn 4x larger, then shrunk: smooth edges like a real photo's


def _colours(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A background and a shape colour whose brightness differs enough to see the shape."""
    while True:
        back = tuple(rng.randrange(256) for _ in range(3))
        fore = tuple(rng.randrange(256) for _ in range(3))
        if abs(sum(back) - sum(fore)) > 150:
            return back, fore  # type: ignore[return-value]


def draw(label: str, rng: random.Random) -> Image.Image:
    """One SIZE x SIZE RGB picture of `label`."""
    back, fore = _colours(rng)
    big = SIZE * _SCALE
    image = Image.new("RGB", (big, big), back)
    pen = ImageDraw.Draw(image)
    radius = rng.uniform(5, 12) * _SCALE
    cx = rng.uniform(radius + _SCALE, big - radius - _SCALE)
    cy = rng.uniform(radius + _SCALE, big - radius - _SCALE)
    turn = rng.uniform(0, 2 * math.pi)
    if label == "Circle":
        pen.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fore)
    else:
        corners = 4 if label == "Square" else 3
        points = [
            (cx + radius * math.cos(turn + 2 * math.pi * k / corners),
             cy + radius * math.sin(turn + 2 * math.pi * k / corners))
            for k in range(corners)
        ]  # fmt: skip
        pen.polygon(points, fill=fore)
    small = np.asarray(image.resize((SIZE, SIZE), Image.Resampling.LANCZOS), dtype=np.float32)
    noise = np.random.default_rng(rng.randrange(2**32)).normal(0, 24, small.shape)
    return Image.fromarray(np.clip(small + noise, 0, 255).astype(np.uint8))


def make_set(count: int, seed: int) -> list[tuple[Image.Image, str]]:
    """`count` pictures, classes in turn, the same for the same seed."""
    rng = random.Random(seed)
    return [(draw(CLASSES[i % len(CLASSES)], rng), CLASSES[i % len(CLASSES)]) for i in range(count)]


def seed_set() -> list[tuple[Image.Image, str]]:
    """What the model knows before any annotation: one picture of each class."""
    return make_set(3, seed=7)


def holdout_set() -> list[tuple[Image.Image, str]]:
    """Pictures never shown for annotation: the held-out score is measured on these."""
    return make_set(90, seed=20261125)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def main() -> None:
    here = Path(__file__).parent
    folder = here / "images"
    folder.mkdir(exist_ok=True)
    labels = {}
    for index, (image, label) in enumerate(make_set(60, seed=1)):
        name = f"shape_{index:03d}.png"
        (folder / name).write_bytes(png_bytes(image))
        labels[name] = label
    (folder / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    tasks = [
        {"data": {"image": "data:image/png;base64," + base64.b64encode(png_bytes(im)).decode()}}
        for im, _ in holdout_set()[:8]
    ]
    (here / "tasks.json").write_text(json.dumps(tasks, indent=1) + "\n")


if __name__ == "__main__":
    main()
