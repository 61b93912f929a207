"""Noisy-label finder and advice rules on made-up histories."""

from __future__ import annotations

import math

import pytest

from cellseg_gui.core.config import TrainConfig
from cellseg_gui.core.training.diagnostics import Advice, advise, apply_changes, noisy_labels


def _hist(train_loss, train_j=None, val_j=None, lr=None):
    n = len(train_loss)
    return {
        "epoch": list(range(n)),
        "train_loss": list(train_loss),
        "val_loss": [None] * n,
        "train_fg_jaccard": list(train_j) if train_j is not None else [0.5] * n,
        "val_fg_jaccard": list(val_j) if val_j is not None else [None] * n,
        "lr": list(lr) if lr is not None else [1e-3] * n,
        "seconds": [1.0] * n,
    }


def _codes(items: list[Advice]) -> list[str]:
    return [a.code for a in items]


def test_noisy_labels_flags_the_one_bad_mask_worst_first():
    losses = {f"img{i}": 0.20 + 0.01 * (i % 5) for i in range(12)}
    losses["scrambled"] = 1.4
    ranked = noisy_labels(losses)
    assert ranked[0] == ("scrambled", 1.4, True)
    assert [o for _, _, o in ranked[1:]] == [False] * 12
    assert [v for _, v, _ in ranked] == sorted((v for v in losses.values()), reverse=True)


def test_noisy_labels_low_loss_and_tiny_sets_are_not_flagged():
    assert not any(o for *_, o in noisy_labels({"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.01}))
    assert not any(o for *_, o in noisy_labels({"a": 0.1, "b": 9.0}))
    assert noisy_labels({}) == []
    # identical losses (MAD 0) do not flag rounding noise
    same = {f"i{k}": 0.3 for k in range(6)}
    same["i0"] = 0.3000001
    assert not any(o for *_, o in noisy_labels(same))


def test_noisy_labels_non_finite_loss_is_flagged():
    ranked = noisy_labels({"a": 0.2, "b": float("nan"), "c": 0.3})
    flagged = {n for n, _, o in ranked if o}
    assert flagged == {"b"}


def test_flat_loss_advises_overfit_check_then_lr_finder():
    items = advise(_hist([0.70, 0.69, 0.70, 0.69, 0.69]))
    assert _codes(items) == ["loss_not_falling"]
    text = items[0].text
    assert "overfit" in text and "LR finder" in text and "5 epochs" in text
    assert "0.7" in text


def test_falling_loss_gives_no_flat_advice():
    items = advise(_hist([1.0, 0.7, 0.5, 0.4, 0.35], train_j=[0.3, 0.5, 0.7, 0.8, 0.9]))
    assert "loss_not_falling" not in _codes(items)


def test_val_lagging_advises_regularisation_with_numbers():
    train_j = [0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.93, 0.94]
    val_j = [0.5, 0.65, 0.70, 0.72, 0.74, 0.76, 0.78, 0.79]
    items = advise(_hist([1.0, 0.6, 0.4, 0.3, 0.25, 0.2, 0.18, 0.16], train_j, val_j))
    lag = next(a for a in items if a.code == "val_lagging")
    # gap >= 0.1 in the last 6 epochs, 0.94 - 0.79 = 0.15 at the end
    assert "lags training by 0.15 for 6 epochs" in lag.text
    assert "augmentation" in lag.text and "dropout" in lag.text
    assert lag.changes["augment.affine"] is True
    assert lag.changes["model.dropout"] == 0.2
    assert lag.changes["weight_decay"] >= 1e-3
    cfg = apply_changes(TrainConfig(), lag.changes)
    assert cfg.augment.affine and cfg.model.dropout == 0.2


def test_val_lagging_does_not_advise_what_the_run_already_used():
    train_j = [0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.93, 0.94]
    val_j = [0.5, 0.65, 0.70, 0.72, 0.74, 0.76, 0.78, 0.79]
    hist = _hist([1.0, 0.6, 0.4, 0.3, 0.25, 0.2, 0.18, 0.16], train_j, val_j)
    cfg = TrainConfig()  # every augmentation on by default
    lag = next(a for a in advise(hist, cfg) if a.code == "val_lagging")
    assert not any(k.startswith("augment.") for k in lag.changes)
    assert "turn on augmentation" not in lag.text and "add dropout" in lag.text
    cfg.augment.elastic = False
    lag = next(a for a in advise(hist, cfg) if a.code == "val_lagging")
    assert lag.changes["augment.elastic"] is True and "augment.affine" not in lag.changes
    assert "turn on augmentation" in lag.text
    cfg = apply_changes(TrainConfig(), {"model.dropout": 0.3, "weight_decay": 1e-2})
    lag = next(a for a in advise(hist, cfg) if a.code == "val_lagging")
    assert lag.changes == {}
    assert "already on: annotate more images" in lag.text


def test_short_lag_is_not_advised():
    train_j = [0.5, 0.7, 0.8, 0.9, 0.9]
    val_j = [0.5, 0.7, 0.8, 0.75, 0.78]  # lagging only 2 epochs
    items = advise(_hist([1.0, 0.6, 0.4, 0.3, 0.25], train_j, val_j))
    assert "val_lagging" not in _codes(items)


def test_nan_loss_advises_lower_lr_only():
    cfg = TrainConfig(lr=3e-3)
    items = advise(_hist([0.9, 0.7, float("nan"), float("nan")]), cfg)
    assert _codes(items) == ["diverging"]
    assert items[0].changes == {"lr": 3e-4}
    assert "epoch 3" in items[0].text


def test_rising_loss_is_diverging():
    items = advise(_hist([0.9, 0.5, 0.4, 0.9, 2.5], lr=[1e-2] * 5))
    assert _codes(items) == ["diverging"]
    assert math.isclose(items[0].changes["lr"], 1e-3)
    assert "0.4" in items[0].text and "2.5" in items[0].text


def test_early_plateau_suggests_bigger_model_or_longer():
    cfg = TrainConfig()
    cfg.model.hidden = 16
    cfg.epochs = 10
    j = [0.3, 0.5, 0.6, 0.62, 0.62, 0.62, 0.62, 0.61, 0.62, 0.62]
    loss = [1.0, 0.7, 0.6, 0.55, 0.54, 0.54, 0.54, 0.54, 0.54, 0.54]
    items = advise(_hist(loss, j, [v - 0.02 for v in j]), cfg)
    assert _codes(items) == ["plateau"]
    assert items[0].changes == {"model.hidden": 32, "epochs": 20}
    assert "0.60" in items[0].text and "hidden size" in items[0].text


def test_still_improving_suggests_longer_training():
    j = [0.3, 0.45, 0.55, 0.62, 0.68, 0.73]
    loss = [1.0, 0.8, 0.6, 0.5, 0.42, 0.36]
    items = advise(_hist(loss, j, [v - 0.01 for v in j]))
    assert _codes(items) == ["still_improving"]
    assert items[0].changes["epochs"] == 12


def test_a_time_limited_run_is_told_to_train_longer_in_minutes_as_options_to_type():
    """A time-limited run has epochs 0: the advice was 'epochs=0, model.hidden=32'; it
    doubles the minutes, and the CLI prints options that `cellseg train` takes."""
    from cellseg_gui.cli.training import advice_options

    cfg = TrainConfig()
    cfg.model.hidden, cfg.epochs, cfg.minutes = 16, 0, 10.0
    j = [0.3, 0.5, 0.6, 0.62, 0.62, 0.62, 0.62, 0.61, 0.62, 0.62]
    loss = [1.0, 0.7, 0.6, 0.55, 0.54, 0.54, 0.54, 0.54, 0.54, 0.54]
    items = advise(_hist(loss, j, [v - 0.02 for v in j]), cfg)
    assert items[0].changes == {"minutes": 20.0, "model.hidden": 32}
    assert advice_options(items[0].changes, cfg) == "--minutes 20 --hidden 32"
    cfg.augment.elastic = False  # a list of augmentations replaces the run's own
    shown = advice_options({"augment.elastic": True, "weight_decay": 1e-3}, cfg)
    assert shown == "--weight-decay 0.001 --augment flips,rot90,affine,intensity,noise,blur,elastic"


def test_a_run_limited_by_epochs_and_minutes_is_told_to_double_both():
    """With both limits, doubling the epochs alone left a run the clock stopped exactly
    as long as before: the advice doubles both, as options to type."""
    from cellseg_gui.cli.training import advice_options

    cfg = TrainConfig()
    cfg.epochs, cfg.minutes = 40, 5.0
    j = [0.3, 0.45, 0.55, 0.62, 0.68, 0.73]
    loss = [1.0, 0.8, 0.6, 0.5, 0.42, 0.36]
    items = advise(_hist(loss, j, [v - 0.01 for v in j]), cfg)
    assert _codes(items) == ["still_improving"]
    assert items[0].changes == {"minutes": 10.0, "epochs": 80}
    assert advice_options(items[0].changes, cfg) == "--minutes 10 --epochs 80"


def test_healthy_run_has_no_advice():
    j = [0.5, 0.7, 0.85, 0.9, 0.91, 0.91]
    loss = [1.0, 0.5, 0.3, 0.2, 0.19, 0.19]
    assert advise(_hist(loss, j, [v - 0.02 for v in j])) == []


def test_empty_history_has_no_advice():
    assert advise({}) == []


def test_apply_changes_copies_and_rejects_unknown_fields():
    cfg = TrainConfig()
    new = apply_changes(cfg, {"lr": 1e-4, "model.hidden": 64, "augment.elastic": True})
    assert (new.lr, new.model.hidden, new.augment.elastic) == (1e-4, 64, True)
    assert cfg.lr != 1e-4 and cfg.model.hidden != 64  # original untouched
    with pytest.raises(KeyError):
        apply_changes(cfg, {"model.hiden": 3})
    with pytest.raises(KeyError):
        apply_changes(cfg, {"lr.x": 3})


def test_every_rule_change_applies_to_a_default_config():
    """Each advice's changes must name real fields, or Apply in the window would fail."""
    histories = [
        _hist([0.9, 0.7, float("nan")]),
        _hist([0.7, 0.7, 0.7]),
        _hist(
            [1.0, 0.5, 0.3, 0.2, 0.2, 0.2],
            [0.5, 0.8, 0.9, 0.9, 0.9, 0.9],
            [0.5, 0.6, 0.6, 0.6, 0.6, 0.6],
        ),
        _hist([1.0, 0.7, 0.6, 0.6, 0.6, 0.6], [0.3, 0.5, 0.5, 0.5, 0.5, 0.5]),
    ]
    seen = set()
    for h in histories:
        for a in advise(h, TrainConfig()):
            seen.add(a.code)
            apply_changes(TrainConfig(), a.changes)
    assert {"diverging", "loss_not_falling", "val_lagging", "plateau"} <= seen


def test_an_oscillating_validation_score_advises_a_lower_learning_rate():
    """Find LR's 0.017 gave validation Jaccards of 0.09 / 0.52 / 0.32 / 0.09 / 0.57."""
    val_j = [0.09, 0.52, 0.32, 0.09, 0.57]
    cfg = TrainConfig()
    cfg.lr = 0.017
    items = advise(_hist([1.0, 0.8, 0.7, 0.65, 0.6], val_j=val_j, lr=[0.017] * 5), cfg)
    unstable = next(a for a in items if a.code == "unstable")
    assert "0.09 / 0.52 / 0.32 / 0.09 / 0.57" in unstable.text
    assert "lower it from 0.017" in unstable.text
    assert unstable.changes["lr"] == pytest.approx(0.017 / 3, rel=0.3)
    assert apply_changes(cfg, unstable.changes).lr < cfg.lr
    steady = [0.3, 0.4, 0.45, 0.5, 0.52]  # rising with small wobbles: no advice
    quiet = advise(_hist([1.0, 0.8, 0.7, 0.65, 0.6], val_j=steady), cfg)
    assert "unstable" not in _codes(quiet)
