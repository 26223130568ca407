"""A ToonVision-like dataset, so the demo and the tests need no download.

Four classes, one per Cog suit. The class shows in the suit's colour; pose,
size, position, background and noise vary from image to image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SUITS", "synthesize"]

#: Suit colours (RGB), after the article's four corporate ladders.
SUITS: dict[str, tuple[int, int, int]] = {
    "bossbot": (112, 78, 52),
    "lawbot": (46, 62, 128),
    "cashbot": (58, 116, 74),
    "sellbot": (122, 40, 72),
}


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)  # type: ignore[return-value]


def _cog(rng: np.random.Generator, suit: tuple[int, int, int], height: int, width: int) -> Image.Image:
    top = tuple(int(v) for v in rng.integers(90, 230, 3))
    bottom = tuple(int(v) for v in rng.integers(60, 200, 3))
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    background = (np.array(top)[None, None, :] * (1 - ramp) + np.array(bottom)[None, None, :] * ramp).repeat(width, axis=1)
    image = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    scale = rng.uniform(0.55, 0.95)
    cx = width * rng.uniform(0.35, 0.65)
    body_h, body_w = height * 0.38 * scale, width * 0.55 * scale
    y0 = height * rng.uniform(0.18, 0.3)
    lean = rng.uniform(-0.12, 0.12) * body_w
    head_r = body_w * rng.uniform(0.28, 0.4)
    draw.ellipse([cx - head_r, y0 - 2 * head_r, cx + head_r, y0], fill=_jitter(rng, (190, 190, 200), 30))
    suit_colour = _jitter(rng, suit, 18)
    draw.polygon(
        [(cx - body_w / 2, y0), (cx + body_w / 2, y0), (cx + body_w / 2 + lean, y0 + body_h), (cx - body_w / 2 + lean, y0 + body_h)],
        fill=suit_colour,
    )
    arm = body_w * 0.18
    for side in (-1, 1):
        swing = rng.uniform(-0.25, 0.25) * body_h
        limb = {"fill": suit_colour, "width": max(1, int(arm))}
        draw.line([(cx + side * body_w / 2, y0 + arm), (cx + side * (body_w / 2 + arm), y0 + body_h * 0.7 + swing)], **limb)
        draw.line([(cx + side * body_w / 4 + lean, y0 + body_h), (cx + side * body_w / 3 + lean, y0 + body_h * 1.9)], **limb)
    pixels = np.asarray(image).astype(np.int16) + rng.normal(0, 10, (height, width, 3)).astype(np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def synthesize(out: Path, per_class: int = 40, size: tuple[int, int] = (600, 200), seed: int = 42) -> dict[str, int]:
    """Write `<out>/<suit>/<suit>_<n>.png`; return the image count per class."""
    if per_class < 2:
        raise ValueError(f"per_class must be at least 2, but got {per_class=}.")
    height, width = size
    rng = np.random.default_rng(seed)
    counts = {}
    for suit, colour in SUITS.items():
        folder = out / suit
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            _cog(rng, colour, height, width).save(folder / f"{suit}_{n:04d}.png")
        counts[suit] = per_class
    return counts
