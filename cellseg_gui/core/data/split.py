"""The train / validation split: one function, used by ``cellseg train``, the window and
the project file, so the same images give the same split everywhere."""

from __future__ import annotations

import random

__all__ = ["split_train_val"]


def split_train_val(
    names: list[str], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Split image names into train and validation, reproducibly for a seed.

    At least one validation image whenever there are two or more images, and at least
    one training image always. Order within each part follows the input order so the
    split reads naturally in reports.
    """
    names = list(names)
    if len(names) < 2:
        return names, []
    n_val = min(len(names) - 1, max(1, int(round(len(names) * float(val_fraction)))))
    order = list(range(len(names)))
    random.Random(int(seed)).shuffle(order)
    val_idx = set(order[:n_val])
    train = [n for i, n in enumerate(names) if i not in val_idx]
    val = [n for i, n in enumerate(names) if i in val_idx]
    return train, val
