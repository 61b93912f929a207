"""The default class colours (RGB), shared by projects, bundles, the canvas and the editor,
so a class keeps its colour wherever it is shown. Index 0 is background."""

from __future__ import annotations

PALETTE: list[tuple[int, int, int]] = [
    (0, 0, 0),
    (46, 204, 113),
    (241, 196, 15),
    (52, 152, 219),
    (231, 76, 60),
    (155, 89, 182),
    (230, 126, 34),
    (26, 188, 156),
    (236, 240, 241),
]

FP_COLOR = (255, 0, 255)  # difference view: predicted foreground where GT is background
FN_COLOR = (0, 200, 255)  # difference view: GT foreground the prediction missed
# one wording for the two kinds of error, in every legend and label
FP_WORDS = "extra (false positive)"
FN_WORDS = "missed (false negative)"


def class_color(k: int) -> tuple[int, int, int]:
    """Colour of class ``k``; past the palette, foreground colours repeat."""
    return PALETTE[k] if k < len(PALETTE) else PALETTE[1 + (k - 1) % (len(PALETTE) - 1)]
