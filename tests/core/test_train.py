"""fit: events, bundle record, determinism, cancel, divergence, resume, fine-tune."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cellseg_gui.core.config import AugmentConfig, ModelConfig, TrainConfig
from cellseg_gui.core.data.dataset import Sample
from cellseg_gui.core.events import (
    CANCELLED,
    DIVERGED,
    DIVERGED_HINT,
    DONE,
    EpochEnded,
    Finished,
    Message,
    SampleLosses,
    Started,
    StepEnded,
)
from cellseg_gui.core.jobs import CancelToken
from cellseg_gui.core.model.bundle import load_bundle, read_bundle_meta
from cellseg_gui.core.training.sampling import _steps_per_epoch
from cellseg_gui.core.training.train import (
    choose_downsample,
    fit,
    resolve_precision,
    split_train_val,
)


def make_samples(n: int = 4, size: int = 80, seed: int = 0) -> list[Sample]:
    """Bright discs on noise: learnable in a few steps by a tiny model."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for i in range(n):
        t = np.zeros((size, size), np.uint8)
        for _ in range(4):
            cy, cx = rng.integers(8, size - 8, 2)
            t[(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = 1
        out.append(_noisy_sample(f"img{i}", t, rng, i))
    return out


def _noisy_sample(name: str, t: np.ndarray, rng, uid: int) -> Sample:
    """The mask's foreground made bright, plus noise: a two-class training sample."""
    img = (t + rng.normal(0, 0.3, t.shape)).astype(np.float32)[None]
    return Sample(
        name=name, image=img, target=t, image_path=Path(f"{name}.tif"),
        mask_path=Path(f"{name}_mask.png"), sha256=f"{uid:064x}", n_classes=2,
    )  # fmt: skip


def tiny_cfg(**kw) -> TrainConfig:
    cfg = TrainConfig(
        model=ModelConfig(hidden=4, depth=2), crop=64, batch_size=2, epochs=2,
        steps_per_epoch=3, augment=AugmentConfig.none(), device="cpu", amp="auto", patience=0,
    )  # fmt: skip
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def run(samples, cfg, **kw) -> tuple[list, Finished]:
    events = list(fit(samples, cfg, **kw))
    assert isinstance(events[-1], Finished)
    return events, events[-1]


def test_split_is_reproducible_disjoint_and_keeps_a_validation_image() -> None:
    names = [f"n{i}" for i in range(10)]
    a = split_train_val(names, 0.2, seed=1)
    assert a == split_train_val(names, 0.2, seed=1)
    assert a != split_train_val(names, 0.2, seed=2)
    train, val = a
    assert len(val) == 2 and set(train) | set(val) == set(names) and not set(train) & set(val)
    assert len(split_train_val(names[:2], 0.01, 0)[1]) == 1


def test_auto_precision_is_fp32_on_a_cpu_without_fast_bf16(monkeypatch) -> None:

    monkeypatch.setattr("cellseg_gui.core.model.precision._cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    monkeypatch.setattr("cellseg_gui.core.model.precision._cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", torch.device("cpu")) == "bf16"


def test_fit_yields_events_and_writes_a_bundle_with_its_record(tmp_path: Path) -> None:
    samples = make_samples()
    out = tmp_path / "m.cellseg"
    events, fin = run(samples, tiny_cfg(), out_path=out, mask_mode="binary")
    # auto precision is the machine's: bf16 where the CPU has AVX512-BF16 or AMX
    expected = resolve_precision("auto", torch.device("cpu"))
    assert isinstance(events[0], Started) and events[0].precision == expected
    assert sum(isinstance(e, StepEnded) for e in events) == 6
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    assert len(epochs) == 2 and all(len(e.train_jaccard) == 2 for e in epochs)
    losses = [e for e in events if isinstance(e, SampleLosses)]
    assert len(losses) == 2
    assert set(losses[0].losses) == set(fin.result["split"]["train"])
    assert all(len(box) == 4 for box in losses[0].regions.values())
    assert fin.reason == DONE and fin.bundle_path == str(out)
    r = fin.result
    assert len(r["history"]["train_loss"]) == 2 and r["best_epoch"] in (0, 1)
    assert len(r["split"]["val"]) >= 1 and set(r["per_image_val_jaccard"]) == set(r["split"]["val"])
    meta = read_bundle_meta(out)
    rec = meta["training"]
    assert rec["seed"] == 0 and rec["settings"]["crop"] == 64
    assert {i["name"]: i["sha256"] for i in rec["images"]} == {s.name: s.sha256 for s in samples}
    assert rec["history"]["val_fg_jaccard"] == r["history"]["val_fg_jaccard"]
    assert "torch" in meta["versions"]
    load_bundle(out)  # loads back


def test_same_seed_gives_identical_weights_and_history(tmp_path: Path) -> None:
    samples = make_samples()
    cfg = tiny_cfg(augment=AugmentConfig.all())
    _, a = run(samples, cfg, out_path=tmp_path / "a.cellseg")
    _, b = run(samples, cfg, out_path=tmp_path / "b.cellseg")
    assert a.result["history"]["train_loss"] == b.result["history"]["train_loss"]
    wa = load_bundle(tmp_path / "a.cellseg").model.state_dict()
    wb = load_bundle(tmp_path / "b.cellseg").model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    _, c = run(samples, tiny_cfg(augment=AugmentConfig.all(), seed=5))
    assert c.result["history"]["train_loss"] != a.result["history"]["train_loss"]


def test_cancel_returns_within_one_step_and_keeps_the_model(tmp_path: Path) -> None:
    token = CancelToken()
    out = tmp_path / "c.cellseg"
    events = []
    for ev in fit(make_samples(), tiny_cfg(epochs=50), cancel=token, out_path=out):
        events.append(ev)
        if isinstance(ev, StepEnded) and ev.global_step == 4:
            token.cancel()
    steps = [e for e in events if isinstance(e, StepEnded)]
    assert steps[-1].global_step == 4
    fin = events[-1]
    assert fin.reason == CANCELLED and fin.bundle_path == str(out) and out.exists()


def test_nan_loss_stops_with_diverged_and_a_hint() -> None:
    samples = make_samples()
    samples[0].image[:] = np.nan
    samples[1].image[:] = np.nan
    samples[2].image[:] = np.nan
    _, fin = run(samples, tiny_cfg(), val_names=["img3"])
    assert fin.reason == DIVERGED and fin.hint == DIVERGED_HINT


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    samples = make_samples()
    cfg = tiny_cfg(epochs=3, augment=AugmentConfig.all())
    _, full = run(samples, cfg, out_path=tmp_path / "full.cellseg")
    token = CancelToken()
    ck = tmp_path / "ck.pt"
    for ev in fit(samples, cfg, cancel=token, checkpoint_path=ck):
        if isinstance(ev, EpochEnded) and ev.epoch == 0:
            token.cancel()
    _, resumed = run(samples, cfg, resume=ck, out_path=tmp_path / "res.cellseg")
    assert resumed.reason == DONE
    assert resumed.result["history"]["train_loss"] == full.result["history"]["train_loss"]
    wa = load_bundle(tmp_path / "full.cellseg").model.state_dict()
    wb = load_bundle(tmp_path / "res.cellseg").model.state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_fine_tune_starts_from_the_bundle_and_reports_the_guard_rail(tmp_path: Path) -> None:
    samples = make_samples()
    base = tmp_path / "base.cellseg"
    run(samples, tiny_cfg(epochs=3), out_path=base)
    # a wildly high learning rate to make the new model worse than the old one
    cfg = tiny_cfg(epochs=1, lr=5.0, optimizer="sgd", schedule="constant")
    _, fin = run(samples, cfg, init_bundle=base, out_path=tmp_path / "ft.cellseg")
    g = fin.result["guard_rail"]
    assert g is not None
    assert g["new_is_worse"] == (g["new_val_fg_jaccard"] < g["init_val_fg_jaccard"])
    assert ("WORSE" in fin.message) == g["new_is_worse"]
    _, plain = run(samples, tiny_cfg(epochs=1))
    assert plain.result["guard_rail"] is None


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "sgdr", "onecycle"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_schedules_and_optimizers_run(schedule: str, optimizer: str) -> None:
    cfg = tiny_cfg(epochs=2, steps_per_epoch=1, schedule=schedule, optimizer=optimizer,
                   warmup_epochs=1, step_epochs=1, sgdr_period=1)  # fmt: skip
    events, fin = run(make_samples(2), cfg)
    assert fin.reason == DONE
    lrs = [e.lr for e in events if isinstance(e, StepEnded)]
    assert all(np.isfinite(lrs)) and max(lrs) <= cfg.lr


def test_images_smaller_than_the_crop_are_padded_not_refused() -> None:
    samples = make_samples(3, size=40)
    _, fin = run(samples, tiny_cfg(epochs=1, steps_per_epoch=2))
    assert fin.reason == DONE, fin.message


def _big_disc_samples(n: int = 3, size: int = 96) -> list[Sample]:
    """One disc of radius 30 per image: objects thick enough for half resolution."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for i in range(n):
        t = (((yy - 48) ** 2 + (xx - 40 - 4 * i) ** 2) < 900).astype(np.uint8)
        out.append(_noisy_sample(f"big{i}", t, rng, i + 9))
    return out


def test_choose_downsample_follows_the_thinnest_class() -> None:
    big = _big_disc_samples()
    assert choose_downsample(big) == 2
    # small discs (radius 8): most of their pixels are near an edge
    assert choose_downsample(make_samples()) == 1
    # thin background: a membrane grid 3 px wide between large cells, like EM
    grid = np.ones((96, 96), np.uint8)
    grid[::24] = 0
    grid[1::24] = 0
    grid[2::24] = 0
    grid[:, ::24] = grid[:, 1::24] = grid[:, 2::24] = 0
    membranes = [Sample("em", grid[None].astype(np.float32), grid, None, None, "0", 2)]
    assert choose_downsample(membranes) == 1
    # instance masks: the derived 2-px boundary class does not count as thin structure
    inst = big[0].target.copy()
    inst[48, :] = np.where(inst[48, :] > 0, 2, 0)
    inst[49, :] = np.where(inst[49, :] > 0, 2, 0)
    s = Sample("inst", big[0].image, inst, None, None, "1", 3, mask_mode="instances")
    assert choose_downsample([s]) == 2
    s.mask_mode = "classes"
    assert choose_downsample([s]) == 1
    assert choose_downsample([]) == 1


def test_auto_downsample_is_chosen_once_recorded_and_honoured(tmp_path: Path) -> None:
    """downsample 0 (the default) becomes 2 on large objects; the bundle records 2, says
    so in a message, and predicts at the image's own size. An explicit 1 stays 1."""
    samples = _big_disc_samples()
    cfg = tiny_cfg(epochs=1, crop=64)
    assert cfg.model.downsample == 0
    events, fin = run(samples, cfg, out_path=tmp_path / "auto.cellseg")
    assert fin.reason == DONE
    texts = [e.text for e in events if isinstance(e, Message)]
    assert any(t.startswith("downsample 2") for t in texts)
    b = load_bundle(tmp_path / "auto.cellseg", "cpu")
    assert b.model_config.downsample == 2 and b.model.downsample == 2
    raw = (samples[0].image[0] * 1000 + 2000).astype(np.uint16)[:83, :77]
    assert b.predict(raw).labels.shape == (83, 77)
    cfg1 = tiny_cfg(epochs=1, crop=64)
    cfg1.model.downsample = 1
    events, _ = run(samples, cfg1, out_path=tmp_path / "one.cellseg")
    assert not any(isinstance(e, Message) and "downsample" in e.text for e in events)
    assert read_bundle_meta(tmp_path / "one.cellseg")["architecture"]["downsample"] == 1


@pytest.mark.parametrize(
    "schedule, stops_after",
    # patience 2, 20 epochs, validation worse every epoch after the first: constant counts
    # at once; cosine and one-cycle once the rate is a tenth of its peak (81% and 85%,
    # epoch 16 of 0..19 both)
    [("constant", 3), ("step", 3), ("cosine", 18), ("onecycle", 18)],
)
def test_early_stopping_counts_once_the_rate_comes_down(monkeypatch, schedule, stops_after):
    import cellseg_gui.core.training.train as train_mod
    from cellseg_gui.core.events import EARLY_STOP

    scores = iter(np.linspace(0.9, 0.1, 20))

    def worse_every_epoch(model, val_s, n_classes, *a, **k):
        return train_mod.EvalResult(loss=1.0, per_class=[0.5] * n_classes, fg_jaccard=next(scores))

    monkeypatch.setattr(train_mod, "_distributed_evaluate", worse_every_epoch)
    cfg = tiny_cfg(epochs=20, steps_per_epoch=1, patience=2, schedule=schedule)
    events, fin = run(make_samples(3), cfg, val_names=["img2"])
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    assert fin.reason == EARLY_STOP and len(epochs) == stops_after
    assert fin.result["best_epoch"] == 0 and "no validation improvement for 2 epochs" in fin.message
    # without patience the run goes the distance
    scores = iter(np.linspace(0.9, 0.1, 20))
    _, fin = run(make_samples(3), tiny_cfg(epochs=20, steps_per_epoch=1, schedule=schedule))
    assert fin.reason == DONE


@pytest.mark.parametrize("kind, expected", [("onecycle", 0.847), ("cosine", 0.805)])
def test_patience_counts_from_where_the_rate_is_a_tenth_of_its_peak(kind, expected) -> None:
    from cellseg_gui.core.training.objective import LRSchedule

    sched = LRSchedule(kind=kind, base_lr=1e-3, warmup_epochs=2)
    start = sched.patience_from()
    assert start == pytest.approx(expected, abs=1e-3)
    assert sched.lr(start, 100.0) == pytest.approx(1e-4, rel=1e-3)
    assert sched.lr(start - 0.01, 100.0) > 1e-4 > sched.lr(start + 0.01, 100.0)
    assert LRSchedule(kind="constant", base_lr=1e-3).patience_from() == 0.0


def test_a_resumed_run_stops_early_where_the_uninterrupted_one_does(monkeypatch, tmp_path):
    """Patience counted before a checkpoint carries over, and nothing more: epochs of the
    high-rate phase are not counted after a resume either."""
    import cellseg_gui.core.training.train as train_mod

    state: dict = {}

    def worse_every_epoch(model, val_s, n_classes, *a, **k):
        return train_mod.EvalResult(
            loss=1.0, per_class=[0.5] * n_classes, fg_jaccard=next(state["scores"])
        )

    monkeypatch.setattr(train_mod, "_distributed_evaluate", worse_every_epoch)

    def cfg():
        return tiny_cfg(epochs=20, steps_per_epoch=1, patience=3, schedule="onecycle")

    samples = make_samples(3)
    state["scores"] = iter(np.linspace(0.9, 0.1, 20))
    full, fin = run(samples, cfg(), val_names=["img2"])
    full_epochs = [e.epoch for e in full if isinstance(e, EpochEnded)]
    assert fin.reason == "early_stop" and full_epochs == list(range(19))
    for cut in (15, 16):  # before the count starts, and the first epoch it counts (85%)
        state["scores"] = iter(np.linspace(0.9, 0.1, 20))
        token, ck = CancelToken(), tmp_path / f"cut{cut}.ckpt"
        for ev in fit(samples, cfg(), val_names=["img2"], cancel=token, checkpoint_path=ck):
            if isinstance(ev, EpochEnded) and ev.epoch == cut:
                token.cancel()
        rest, fin = run(samples, cfg(), resume=ck)
        assert [e.epoch for e in rest if isinstance(e, EpochEnded)] == list(range(cut + 1, 19))
        assert fin.reason == "early_stop", cut


def test_resume_reads_a_checkpoint_from_before_the_safe_loader(tmp_path: Path) -> None:
    """Checkpoints written before numbers were stored as plain floats hold numpy scalars
    and no boundary_mode: they still resume (numpy scalars are data), as 'all'."""
    samples = make_samples()
    cfg = tiny_cfg(epochs=2)
    token, ck = CancelToken(), tmp_path / "ck.pt"
    for ev in fit(samples, cfg, cancel=token, checkpoint_path=ck):
        if isinstance(ev, EpochEnded) and ev.epoch == 0:
            token.cancel()
    old = torch.load(ck, weights_only=True)
    old["history"]["val_fg_jaccard"] = [np.float64(v) for v in old["history"]["val_fg_jaccard"]]
    old["best_score"] = np.float64(old["best_score"])
    del old["cfg"]["boundary_mode"]
    torch.save(old, ck)
    _, fin = run(samples, cfg, resume=ck)
    assert fin.reason == DONE, fin.message
    assert fin.result["history"]["epoch"] == [0, 1]


def test_images_too_small_for_the_network_are_left_out_by_name() -> None:
    """`check` on a 1x1 image raised from batch-norm; `train` validated on it (J 0.0000)."""
    from cellseg_gui.core.events import Message
    from cellseg_gui.core.training.train import min_image_side

    samples = make_samples()
    cfg = tiny_cfg()
    tiny = samples[0]
    tiny.name = "speck"
    tiny.image = tiny.image[:, :1, :1].copy()
    tiny.target = tiny.target[:1, :1].copy()
    events = list(fit(samples, cfg, val_names=["speck", samples[-1].name]))
    warned = [e.text for e in events if isinstance(e, Message) and "speck" in e.text]
    side = min_image_side(cfg)
    assert warned and f"smaller than {side} pixels" in warned[0] and "speck (1x1)" in warned[0]
    fin = events[-1]
    assert fin.reason == "done", fin.message
    assert "speck" not in fin.result["split"]["train"] + fin.result["split"]["val"]
    only = list(fit([tiny], cfg))
    assert only[-1].reason == "failed" and "no other image remains" in only[-1].message


def test_out_of_memory_in_fit_is_a_typed_reason(monkeypatch) -> None:
    """The worker found out-of-memory by matching the message fit wrote; now by reason."""
    from cellseg_gui.core.events import OUT_OF_MEMORY
    from cellseg_gui.core.training import train as train_mod

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(train_mod, "build_optimizer", oom)
    fin = list(fit(make_samples(), tiny_cfg()))[-1]
    assert fin.reason == OUT_OF_MEMORY and "Tried to allocate" in fin.message


def _instance_samples(n: int = 3, size: int = 80) -> list[Sample]:
    """Pairs of touching discs with one id each, as an instance mask gives them."""
    from cellseg_gui.core.data.masks import instances_to_classes

    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for i in range(n):
        ids = np.zeros((size, size), np.int32)
        for k, (cy, cx) in enumerate(((25, 25), (25, 41), (58, 50)), start=1):
            ids[((yy - cy) ** 2 + (xx - cx) ** 2 < 70) & (ids == 0)] = k
        img = ((ids > 0) + rng.normal(0, 0.3, ids.shape)).astype(np.float32)[None]
        out.append(
            Sample(
                f"cells{i}",
                img,
                instances_to_classes(ids, 2),
                Path(f"cells{i}.tif"),
                Path(f"cells{i}.png"),
                f"{i + 50:064x}",
                3,
                mask_mode="instances",
                instances=ids,
                instance_source="instances",
            )  # fmt: skip
        )
    return out


def test_a_distance_output_is_trained_recorded_and_tuned_on_instance_masks(tmp_path) -> None:
    cfg = tiny_cfg(epochs=2)
    cfg.model.distance_head = True
    out = tmp_path / "d.cellseg"
    events, fin = run(_instance_samples(), cfg, out_path=out, mask_mode="instances")
    assert fin.reason == DONE and all(np.isfinite(fin.result["history"]["train_loss"]))
    b = load_bundle(out, "cpu")
    assert b.model_config.distance_head and b.model_config.n_outputs == 4
    pred = b.predict((_instance_samples()[0].image[0] * 1000 + 500).astype(np.uint16))
    assert pred.probs.shape[0] == 4 and pred.labels.max() <= 2
    # the end-of-run search ran on the validation image with the distance plane there
    assert b.meta["postprocess"]["chosen"] == "tuned on 1 validation image(s)"
    # binary masks hold no cell ids to learn a distance from: said, and left out
    cfg2 = tiny_cfg(epochs=1)
    cfg2.model.distance_head = True
    events, fin = run(make_samples(), cfg2, out_path=tmp_path / "b.cellseg", mask_mode="binary")
    assert fin.reason == DONE
    assert any("no distance output" in e.text for e in events if isinstance(e, Message))
    assert not load_bundle(tmp_path / "b.cellseg", "cpu").model_config.distance_head


def test_flows_are_trained_recorded_and_tuned_on_instance_masks(tmp_path) -> None:
    cfg = tiny_cfg(epochs=2)
    cfg.model.flow_head = True
    out = tmp_path / "f.cellseg"
    events, fin = run(_instance_samples(), cfg, out_path=out, mask_mode="instances")
    assert fin.reason == DONE and all(np.isfinite(fin.result["history"]["train_loss"]))
    assert all(np.isfinite(fin.result["history"]["val_loss"]))
    b = load_bundle(out, "cpu")
    assert b.model_config.flow_head and b.model_config.n_outputs == 5
    pred = b.predict((_instance_samples()[0].image[0] * 1000 + 500).astype(np.uint16))
    assert pred.probs.shape[0] == 5 and pred.labels.max() <= 2
    assert b.meta["postprocess"]["chosen"] == "tuned on 1 validation image(s)"
    # a model has one head: the distance output, when asked for, replaces the flows
    both = tiny_cfg(epochs=1)
    both.model.flow_head = both.model.distance_head = True
    events, fin = run(_instance_samples(), both, out_path=tmp_path / "x.cellseg")
    assert fin.reason == DONE
    assert any("replaces the flows" in e.text for e in events if isinstance(e, Message))
    mc = load_bundle(tmp_path / "x.cellseg", "cpu").model_config
    assert mc.distance_head and not mc.flow_head and mc.n_outputs == 4
    # masks without ids drop the flows (on by default, so quietly)
    cfg2 = tiny_cfg(epochs=1)
    cfg2.model.flow_head = True
    events, fin = run(make_samples(), cfg2, out_path=tmp_path / "b.cellseg", mask_mode="binary")
    assert fin.reason == DONE
    assert not any("flows" in e.text for e in events if isinstance(e, Message))
    assert not load_bundle(tmp_path / "b.cellseg", "cpu").model_config.flow_head


def test_fine_tuning_a_distance_model_on_masks_without_cell_ids_is_refused(tmp_path) -> None:
    cfg = tiny_cfg(epochs=1)
    cfg.model.distance_head = True
    _, fin = run(_instance_samples(), cfg, out_path=tmp_path / "d.cellseg", mask_mode="instances")
    assert fin.reason == DONE
    samples = make_samples()
    for s in samples:  # three classes, but no ids: what a class-map project gives
        s.n_classes = 3
    _, fin = run(samples, tiny_cfg(epochs=1), init_bundle=tmp_path / "d.cellseg")
    assert fin.reason == "failed" and "learns a distance map from instance masks" in fin.message


def test_an_automatic_epoch_grows_so_validation_stays_a_small_share_of_it() -> None:
    """Four small training images and two large validation ones: one pass over the
    training pixels would be 3 steps of 2 x 64 x 64, while validating their 80,000 pixels
    costs about as much as training on half as many; the epoch is made 49 steps long
    (5 x the validation pixels), as the run's start reports."""
    train = make_samples(4, size=80)
    val = [replace(s, name=f"big{i}") for i, s in enumerate(make_samples(2, size=200, seed=1))]
    cfg = tiny_cfg(steps_per_epoch=None, epochs=1)
    assert _steps_per_epoch(cfg, train, 1) == 3
    assert _steps_per_epoch(cfg, train, 1, val) == round(5 * 2 * 200 * 200 / (2 * 64 * 64))
    assert _steps_per_epoch(cfg, train, 2, val) == 25  # each of two processes: its half
    assert _steps_per_epoch(cfg, train, 1, train) == 3  # no validation images of its own
    events, fin = run(train + val, cfg, val_names=["big0", "big1"])
    started = next(e for e in events if isinstance(e, Started))
    assert started.steps_per_epoch == 49 and fin.result["steps"] == 49
    # a user's own number is kept
    events, _ = run(train + val, tiny_cfg(steps_per_epoch=5, epochs=1), val_names=["big0", "big1"])
    assert next(e for e in events if isinstance(e, Started)).steps_per_epoch == 5
