"""Flows (Cellpose's idea): the target points along each cell towards its centre and apart
where cells touch, it rides through the sampler and turns with the crops, the loss, the
probabilities and flip test-time augmentation treat it as two vector planes, and
following it splits touching cells into one cell each."""

from __future__ import annotations

import numpy as np
import torch

from cellseg_gui.core.config import ModelConfig
from cellseg_gui.core.model.distance import distance_target, outputs_to_probs
from cellseg_gui.core.model.flow import (
    FLOW_EDGE_WEIGHT,
    FLOW_LEVELS,
    FLOW_SCALE,
    FOLLOW_STEPS,
    flow_cells,
    follow,
    follow_steps,
    largest_pieces,
)
from cellseg_gui.core.model.postprocess import (
    MIN_SIZES,
    SINK_SIZES,
    PostProcess,
    default_postprocess,
    prediction_to_instances,
    tune_postprocess,
)
from cellseg_gui.core.model.predict import predict_tiled
from cellseg_gui.core.scores.instances import score_instances
from cellseg_gui.core.training.flow_target import cell_colours, flow_target, flow_target_np
from cellseg_gui.core.training.objective import segmentation_loss
from cellseg_gui.core.training.sampling import CropSampler


def _touching_pair() -> np.ndarray:
    ids = np.zeros((40, 60), np.int32)
    ids[8:32, 6:30] = 1
    ids[8:32, 30:54] = 2  # shares an edge with cell 1
    return ids


def _field(ids: np.ndarray) -> np.ndarray:
    return flow_target_np(distance_target(ids, FLOW_EDGE_WEIGHT), ids)


def test_the_target_is_unit_vectors_in_cells_pointing_apart_where_they_touch() -> None:
    ids = _touching_pair()
    f = _field(ids)
    assert f.shape == (2, 40, 60) and f.dtype == np.float32
    norm = np.hypot(f[0], f[1])
    assert not f[:, ids == 0].any()
    inside = (ids > 0) & (norm > 0)
    assert inside.sum() >= (ids > 0).sum() - 4  # flat only at the centres
    np.testing.assert_allclose(norm[inside], 1.0, atol=1e-5)
    # at the contact each side points back into its own cell
    assert (f[1][8:32, 29] < 0).all() and (f[1][8:32, 30] > 0).all()


def test_following_the_true_field_gives_one_cell_each_even_branched() -> None:
    ids = _touching_pair()
    ids[32:39, 8:12] = 1  # a branch hanging off cell 1
    f = _field(ids)
    cells = flow_cells(f, ids > 0, sink_size=10)
    assert cells.max() == 2 and score_instances(ids, cells).ap(0.9) == 1.0
    assert not flow_cells(f, np.zeros(ids.shape, bool), 10).any()


def test_a_cell_longer_than_the_usual_paths_still_comes_out_whole() -> None:
    # a cell 600 px long: its tips lie some 300 steps from its centre
    ids = np.zeros((40, 620), np.int32)
    ids[8:20, 10:610] = 1
    ids[20:32, 10:300] = 2  # a neighbour alongside
    f = _field(ids)
    fg = ids > 0
    assert follow_steps(fg) > FOLLOW_STEPS
    assert flow_cells(f, fg, 10, follow(f, fg, steps=FOLLOW_STEPS)).max() > 2  # in pieces
    cells = flow_cells(f, fg, sink_size=10)
    assert cells.max() == 2 and score_instances(ids, cells).ap(0.9) == 1.0


def test_the_sampler_carries_the_field_and_it_turns_with_the_crop() -> None:
    ids = _touching_pair()
    target = (ids > 0).astype(np.uint8)
    pot = distance_target(ids, FLOW_EDGE_WEIGHT)
    sampler = CropSampler(
        [np.zeros((1, 40, 60), np.float32)], [target], crop=32, device=torch.device("cpu"),
        foreground_bias=0.0, gen=torch.Generator().manual_seed(0), n_classes=3,
        distances=[pot], cell_ids=[ids],
    )  # fmt: skip
    y = sampler.targets[0][None]
    classes, weights, dist, flow = sampler.decode(y, w0=0.0)
    assert weights is None and dist is None
    np.testing.assert_array_equal(classes[0].numpy(), target)
    exact = _field(ids)
    # as many levels as float32 carries exactly: the field points as the exact one does
    assert sampler.d_levels == FLOW_LEVELS == 4096
    cos = (flow[0].numpy() * exact).sum(0)[ids > 0]
    assert np.median(cos) > 0.999 and (cos > 0.95).mean() > 0.99
    # a mirrored crop gives the mirrored field, its x component reversed
    _, _, _, mirrored = sampler.decode(y.flip(-1), w0=0.0)
    want = flow.flip(-1)
    want[:, 1] *= -1
    torch.testing.assert_close(mirrored, want)


def test_touching_cells_point_apart_however_their_ids_compare() -> None:
    # ids 1 and 1022 rode as one cell when the ids were folded modulo 1021
    ids = _touching_pair()
    ids[ids == 2] = 1022
    target = (ids > 0).astype(np.uint8)
    sampler = CropSampler(
        [np.zeros((1, 40, 60), np.float32)], [target], crop=32, device=torch.device("cpu"),
        foreground_bias=0.0, gen=torch.Generator().manual_seed(0), n_classes=3,
        distances=[distance_target(ids, FLOW_EDGE_WEIGHT)], cell_ids=[ids],
    )  # fmt: skip
    _, _, _, flow = sampler.decode(sampler.targets[0][None], w0=0.0)
    fx = flow[0, 1].numpy()
    assert (fx[8:32, 29] < 0).all() and (fx[8:32, 30] > 0).all()


def test_cell_colours_keep_neighbours_apart_with_a_few_values() -> None:
    # 2500 cells in a grid, each touching eight others, ids far beyond any small range
    ids = (np.arange(50)[:, None] * 50 + np.arange(50)[None, :] + 1) * 7919
    ids = np.kron(ids, np.ones((6, 6), np.int64))
    ids[::6] = 0  # a one-pixel gap between rows: still within reach
    colours = cell_colours(ids)
    assert ((colours > 0) == (ids > 0)).all()
    assert colours.max() <= 12
    for dy, dx in ((0, 1), (1, 1), (2, 0), (3, 0), (0, 3), (2, 2)):  # across the gap too
        a, b = ids[: ids.shape[0] - dy, : ids.shape[1] - dx], ids[dy:, dx:]
        ca, cb = colours[: ids.shape[0] - dy, : ids.shape[1] - dx], colours[dy:, dx:]
        near = (a > 0) & (b > 0) & (a != b)
        assert near.any() and not (ca[near] == cb[near]).any()
    same = np.unique(np.stack([ids[ids > 0], colours[ids > 0]]), axis=1)
    assert same.shape[1] == 2500  # one colour per cell
    assert not cell_colours(np.zeros((4, 4), np.int32)).any()


def test_loss_and_probabilities_keep_the_flow_planes_apart() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 8, 8)
    p = outputs_to_probs(logits, 3)
    torch.testing.assert_close(p[:, :3].sum(1), torch.ones(2, 8, 8))
    torch.testing.assert_close(p[:, 3:], logits[:, 3:] / FLOW_SCALE)
    y = torch.randint(0, 3, (2, 8, 8))
    ids = torch.randint(0, 3, (2, 8, 8))
    want = flow_target(torch.rand(2, 8, 8), ids)
    with_f, ce = segmentation_loss(logits, y, flow=want)
    classes_only, ce2 = segmentation_loss(logits[:, :3], y)
    mse = torch.nn.functional.mse_loss(logits[:, 3:], FLOW_SCALE * want)
    torch.testing.assert_close(with_f, classes_only + 0.5 * mse)
    torch.testing.assert_close(ce, ce2)


class _GradientFlows(torch.nn.Module):
    """A flip-equivariant 'network': the image's own gradient as its flows."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = ModelConfig(n_classes=3, flow_head=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x[:, :1]
        gy = torch.nn.functional.pad(g[:, :, 2:] - g[:, :, :-2], (0, 0, 1, 1))
        gx = torch.nn.functional.pad(g[..., 2:] - g[..., :-2], (1, 1, 0, 0))
        return torch.cat([g, -g, 0 * g, FLOW_SCALE * gy, FLOW_SCALE * gx], 1)


def test_flip_tta_turns_the_flows_back_before_averaging() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((1, 24, 32)).astype(np.float32)
    plain = predict_tiled(_GradientFlows(), img, tile=64)
    tta = predict_tiled(_GradientFlows(), img, tile=64, tta=True)
    np.testing.assert_allclose(tta.probs, plain.probs, atol=1e-5)
    assert np.abs(plain.probs[3:]).max() > 0.1  # there were flows to turn


def test_the_flow_method_splits_a_pair_the_classes_join_and_tuning_offers_it() -> None:
    ids = _touching_pair()
    fg = ids > 0
    p_cell = np.where(fg, 0.95, 0.02)  # one sure blob: no class threshold parts it
    probs = np.concatenate(
        [np.stack([1 - p_cell, p_cell, np.zeros_like(p_cell)]), _field(ids)]
    ).astype(np.float32)
    labels = fg.astype(np.uint8)
    assert prediction_to_instances(labels, probs, "instances", PostProcess(0.9, 15)).max() == 1
    pp = default_postprocess(False, flow_head=True)
    assert pp.method == "flow" and "flows" in pp.describe()
    cells = prediction_to_instances(labels, probs, "instances", pp)
    assert cells.max() == 2 and score_instances(ids, cells).ap(0.9) == 1.0
    assert PostProcess.from_dict(pp.to_dict()) == pp
    tuned, trials, _ = tune_postprocess([(labels, probs, ids)], "instances")
    assert tuned.val_ap50 == 1.0
    assert sum(t["method"] == "flow" for t in trials) == len(SINK_SIZES) * len(MIN_SIZES)
    # without the planes the flow method falls back to the classes
    assert prediction_to_instances(labels, probs[:3], "instances", pp).max() == 1


def test_a_cell_whose_pixels_do_not_touch_keeps_its_largest_piece() -> None:
    """Pixels of two separate blobs whose flows meet at one sink between them would be
    one cell in two pieces, so its measurements and its one-outline Fiji ROI would
    disagree; the cell keeps its largest piece, the smaller goes to the background."""
    yy, xx = np.mgrid[:40, :60].astype(np.float32)
    dy, dx = 20 - yy, 30 - xx
    norm = np.maximum(np.hypot(dy, dx), 1e-6)
    field = np.stack([dy / norm, dx / norm])  # everything points at (20, 30)
    fg = ((yy - 20) ** 2 + (xx - 15) ** 2 < 64) | ((yy - 20) ** 2 + (xx - 45) ** 2 < 36)
    cells = flow_cells(field, fg, sink_size=5)
    assert cells.max() == 1
    big = (yy - 20) ** 2 + (xx - 15) ** 2 < 64
    assert np.array_equal(cells > 0, big)
    # cells that are whole already come back unchanged
    two = np.zeros((6, 9), np.int32)
    two[1:3, 1:4], two[3:5, 5:8] = 4, 9
    assert np.array_equal(largest_pieces(two), two)
