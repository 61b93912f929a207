"""Diagnostics after (or during) a run: which labels look wrong, and what to try next.

Torch-free: the advice panel and the CLI read a training history (plain lists, as
``fit`` records it and bundles store it) and never need the model. Each rule turns one
well-known symptom of a segmentation run into plain words with the numbers that
triggered it, plus the :class:`TrainConfig` changes that act on it, so a window button
(or ``apply_changes``) can apply the advice without the user knowing field names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cellseg_gui.core.config import TrainConfig

# Noisy-label finder: robust z-score cut (median + K * scaled MAD).
OUTLIER_K = 3.0
_MAD_SCALE = 1.4826  # MAD of a normal distribution -> its standard deviation

# Advice thresholds (named so tests and docs can refer to them).
FLAT_MIN_EPOCHS = 3  # epochs before "loss is not falling" can be judged
FLAT_MIN_DROP = 0.05  # relative drop of the training loss below which it counts as flat
DIVERGE_FACTOR = 2.0  # last loss this many times the best one: diverging
LAG_GAP = 0.1  # train minus validation foreground Jaccard counted as "lagging"
LAG_EPOCHS = 3  # consecutive lagging epochs before advising regularisation
LAG_MIN_TRAIN = 0.5  # training Jaccard must be at least this for the lag to mean overfitting
PLATEAU_WINDOW = 0.4  # last share of epochs inspected for a plateau
PLATEAU_GAIN = 0.01  # Jaccard gain within that window below which it counts as a plateau
PLATEAU_BELOW = 0.85  # a plateau above this Jaccard is just convergence
PLATEAU_MIN_EPOCHS = 5
IMPROVING_GAIN = 0.02  # still gaining this much over the last epochs: train longer


@dataclass(frozen=True)
class Advice:
    """One suggestion. ``changes`` maps dotted TrainConfig fields (``"model.dropout"``,
    ``"augment.affine"``, ``"lr"``) to new values; empty when the advice is an action
    (run the overfit check) rather than a setting."""

    code: str
    text: str
    changes: dict[str, Any] = field(default_factory=dict)
    severity: str = "info"  # "info" | "warning"

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "text": self.text,
            "changes": dict(self.changes),
            "severity": self.severity,
        }


# --------------------------------------------------------------------------- noisy labels


def noisy_labels(
    losses: dict[str, float], *, k: float = OUTLIER_K
) -> list[tuple[str, float, bool]]:
    """Images ranked by training loss, worst first, with outliers flagged.

    A label that disagrees with its image keeps a high loss while the rest fall, so an
    image far above the typical loss is worth a look. Median and MAD, not mean and
    standard deviation, so one bad mask cannot hide itself by inflating the spread. Only
    high outliers are flagged (a low loss is not a labelling problem), and at least three
    images are needed to call anything unusual. Non-finite losses are always flagged.
    """
    items = [(str(n), float(v)) for n, v in losses.items()]
    items.sort(key=lambda nv: (-nv[1] if math.isfinite(nv[1]) else -math.inf, nv[0]))
    finite = np.array([v for _, v in items if math.isfinite(v)], dtype=np.float64)
    if finite.size < 3:
        return [(n, v, not math.isfinite(v)) for n, v in items]
    cut = outlier_threshold(finite, k=k)
    return [(n, v, (not math.isfinite(v)) or v > cut) for n, v in items]


def outlier_threshold(values: np.ndarray | list[float], *, k: float = OUTLIER_K) -> float:
    """The loss above which an image counts as an outlier: median + k * 1.4826 * MAD.

    When most losses are identical the MAD is 0; a floor of 5% of the median (and a tiny
    absolute one) keeps equal-ish losses from being flagged for rounding noise.
    """
    vals = np.asarray(values, dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return math.inf
    med = float(np.median(vals))
    mad = float(np.median(np.abs(vals - med)))
    scale = max(_MAD_SCALE * mad, 0.05 * abs(med), 1e-9)
    return med + k * scale


# --------------------------------------------------------------------------- advice


def _series(history: dict[str, Any], key: str) -> list[float | None]:
    out: list[float | None] = []
    for v in history.get(key) or []:
        if v is None:
            out.append(None)
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            out.append(None)
    return out


def _finite(xs: list[float | None]) -> list[float]:
    return [x for x in xs if x is not None and math.isfinite(x)]


def _base_lr(history: dict[str, Any], cfg: TrainConfig | None) -> float | None:
    if cfg is not None:
        return float(cfg.lr)
    lrs = _finite(_series(history, "lr"))
    return max(lrs) if lrs else None


def _nice(x: float) -> float:
    """Round a suggested value to two significant digits (1e-4, 3e-3, not 0.000312...)."""
    return float(f"{x:.2g}")


def _diverging(history: dict[str, Any], cfg: TrainConfig | None) -> Advice | None:
    losses = _series(history, "train_loss")
    if not losses:
        return None
    bad = [i for i, v in enumerate(losses) if v is not None and not math.isfinite(v)]
    lr = _base_lr(history, cfg)
    changes = {"lr": _nice(lr / 10)} if lr else {}
    lr_txt = f" from {lr:.2g} to {lr / 10:.2g}" if lr else " tenfold"
    if bad:
        return Advice(
            "diverging",
            f"the training loss became NaN or infinite in epoch {bad[0] + 1}: lower the "
            f"learning rate{lr_txt} (or run the LR finder), and check that masks match "
            "their images",
            changes,
            "warning",
        )
    fin = _finite(losses)
    if len(fin) < 3:
        return None
    best = min(fin)
    best_at = fin.index(best)
    last = fin[-1]
    if best > 0 and last > DIVERGE_FACTOR * best and best_at < len(fin) - 1:
        return Advice(
            "diverging",
            f"the training loss rose from {best:.3g} (epoch {best_at + 1}) to {last:.3g} "
            f"({last / best:.1f}x): the learning rate is too high; lower it{lr_txt}",
            changes,
            "warning",
        )
    return None


def _flat(history: dict[str, Any]) -> Advice | None:
    fin = _finite(_series(history, "train_loss"))
    if len(fin) < FLAT_MIN_EPOCHS or fin[0] <= 0:
        return None
    drop = (fin[0] - min(fin)) / fin[0]
    if drop >= FLAT_MIN_DROP:
        return None
    return Advice(
        "loss_not_falling",
        f"the training loss fell only {100 * drop:.0f}% in {len(fin)} epochs "
        f"({fin[0]:.3g} -> {fin[-1]:.3g}): run the overfit-one-image check to rule out a "
        "bug or a data problem, then the LR finder to pick a learning rate",
        {},
        "warning",
    )


def _lagging(history: dict[str, Any], cfg: TrainConfig | None) -> Advice | None:
    train = _series(history, "train_fg_jaccard")
    val = _series(history, "val_fg_jaccard")
    n = min(len(train), len(val))
    run = 0
    gaps: list[float] = []
    for i in range(n - 1, -1, -1):
        t, v = train[i], val[i]
        if t is None or v is None or not (math.isfinite(t) and math.isfinite(v)):
            break
        if t - v >= LAG_GAP and t >= LAG_MIN_TRAIN:
            run += 1
            gaps.append(t - v)
        else:
            break
    if run < LAG_EPOCHS:
        return None
    gap = gaps[0]  # the latest gap: what the model does now
    # only what the run did not already use: augmentation is on by default, so advice to
    # "turn it on" would be advice to change nothing
    changes: dict[str, Any] = {
        f"augment.{name}": True
        for name in ("affine", "elastic")
        if cfg is None or not getattr(cfg.augment, name)
    }
    steps = ["turn on augmentation"] if changes else []
    dropout = cfg.model.dropout if cfg is not None else 0.0
    if dropout < 0.2:
        changes["model.dropout"] = 0.2
        steps.append("add dropout")
    wd = cfg.weight_decay if cfg is not None else 1e-4
    if wd < 1e-3:
        changes["weight_decay"] = 1e-3
        steps.append("add weight decay")
    if steps:
        what = f"{', '.join(steps)} or annotate more images"
    else:
        what = "augmentation, dropout and weight decay are already on: annotate more images"
    return Advice(
        "val_lagging",
        f"validation Jaccard lags training by {gap:.2f} for {run} epochs "
        f"(train {train[n - 1]:.2f}, validation {val[n - 1]:.2f}): the model memorises its "
        f"training images; {what}",
        changes,
    )


def _longer(cfg: TrainConfig | None, epochs_run: int) -> dict[str, Any]:
    """Twice the run's length, in its own terms: minutes for a time-limited run (its
    ``epochs`` is 0 then, and 'epochs=0' was the advice), epochs for an epoch-limited one,
    and both for a run limited by both (doubling the epochs alone left a run that the
    clock stopped just as long)."""
    changes: dict[str, Any] = {}
    if cfg is not None and cfg.minutes:
        changes["minutes"] = round(float(cfg.minutes) * 2, 2)
        if not cfg.epochs:
            return changes
    epochs = cfg.epochs if cfg is not None and cfg.epochs else epochs_run
    changes["epochs"] = int(epochs * 2)
    return changes


def _plateau(history: dict[str, Any], cfg: TrainConfig | None) -> Advice | None:
    key = "val_fg_jaccard" if _finite(_series(history, "val_fg_jaccard")) else "train_fg_jaccard"
    js = _finite(_series(history, key))
    if len(js) < PLATEAU_MIN_EPOCHS:
        return None
    w = max(2, int(math.ceil(PLATEAU_WINDOW * len(js))))
    before, window = js[:-w], js[-w:]
    best = max(js)
    gain = max(window) - max(before) if before else 0.0
    label = "validation" if key.startswith("val") else "training"
    hidden = cfg.model.hidden if cfg is not None else None
    if gain < PLATEAU_GAIN and best < PLATEAU_BELOW:
        changes: dict[str, Any] = _longer(cfg, len(js))
        if hidden:
            changes["model.hidden"] = int(hidden * 2)
        else:
            changes["model.hidden"] = 32
        return Advice(
            "plateau",
            f"{label} Jaccard stopped improving at {best:.2f} (gain {gain:+.3f} in the last "
            f"{w} of {len(js)} epochs): the model may be too small; try a larger hidden size "
            "or train longer",
            changes,
        )
    if len(js) >= 3 and js[-1] >= best - 1e-9 and js[-1] - js[-3] >= IMPROVING_GAIN:
        return Advice(
            "still_improving",
            f"{label} Jaccard was still rising at the end ({js[-3]:.2f} -> {js[-1]:.2f} in "
            "the last 2 epochs): train longer",
            _longer(cfg, len(js)),
        )
    return None


UNSTABLE_SWING = 0.15  # validation Jaccard moving this much up and down: unstable
UNSTABLE_TURNS = 2  # ...this many times in the last epochs


def _unstable(history: dict[str, Any], cfg: TrainConfig | None) -> Advice | None:
    """Validation Jaccard (or loss) swinging up and down from epoch to epoch, as runs with
    too high a learning rate do (seen: 0.09 / 0.52 / 0.32 / 0.09 / 0.57)."""
    for key, what, scale in (("val_fg_jaccard", "Jaccard", 1.0), ("val_loss", "loss", None)):
        vals = _finite(_series(history, key))[-8:]
        if len(vals) < 4:
            continue
        swing = UNSTABLE_SWING if scale else UNSTABLE_SWING * max(abs(v) for v in vals)
        steps = [b - a for a, b in zip(vals, vals[1:], strict=False)]
        turns = sum(
            1
            for a, b in zip(steps, steps[1:], strict=False)
            if a * b < 0 and min(abs(a), abs(b)) >= swing
        )
        if turns >= UNSTABLE_TURNS:
            lr = _base_lr(history, cfg)
            changes = {"lr": _nice(lr / 3)} if lr else {}
            shown = " / ".join(f"{v:.2f}" for v in vals[-5:])
            return Advice(
                "unstable",
                f"the validation {what} swings from epoch to epoch ({shown}): the learning "
                f"rate is probably too high; lower it"
                + (f" from {lr:.2g} to {lr / 3:.2g}" if lr else " threefold"),
                changes,
                "warning",
            )
    return None


def advise(history: dict[str, Any], cfg: TrainConfig | None = None) -> list[Advice]:
    """Rules on a training history (the dict ``fit`` returns), most urgent first.

    ``cfg``, when given, is the run's TrainConfig so suggested values are relative to what
    was used (a tenth of *that* learning rate, twice *that* hidden size). Without it the
    history alone is used. A diverging run gets only the divergence advice: the other
    rules would read a broken curve.
    """
    div = _diverging(history, cfg)
    if div is not None:
        return [div]
    out: list[Advice] = []
    for rule in (_unstable(history, cfg), _flat(history), _lagging(history, cfg)):
        if rule is not None:
            out.append(rule)
    if not any(a.code == "loss_not_falling" for a in out):
        plateau = _plateau(history, cfg)
        if plateau is not None and not (
            plateau.code == "plateau" and any(a.code == "val_lagging" for a in out)
        ):
            out.append(plateau)
    return out


# --------------------------------------------------------------------------- applying


def _set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = d
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
            raise KeyError(f"unknown setting {dotted!r}")
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        raise KeyError(f"unknown setting {dotted!r}")
    node[parts[-1]] = value


def apply_changes(cfg: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """A new TrainConfig with the dotted ``changes`` applied; ``cfg`` is left untouched.

    Raises KeyError for a field that does not exist, so a typo in a rule fails loudly in
    tests instead of silently doing nothing when a user presses Apply.
    """
    d = cfg.to_dict()
    for key, value in changes.items():
        _set_dotted(d, key, value)
    return TrainConfig.from_dict(d)
