"""U-Net: shapes for any size, configuration options, scripting/tracing/ONNX, learning."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from cellseg_gui.core.config import ModelConfig
from cellseg_gui.core.model.unet import UNet, build_model


def tiny(**kw) -> UNet:
    torch.manual_seed(0)
    cfg = ModelConfig(**{"in_channels": 1, "n_classes": 3, "hidden": 4, "depth": 2, **kw})
    return build_model(cfg).eval()


@pytest.mark.parametrize("downsample", [1, 2, 3])
@pytest.mark.parametrize("hw", [(64, 64), (67, 131), (1, 1), (5, 3), (33, 8)])
def test_any_height_and_width(hw: tuple[int, int], downsample: int) -> None:
    model = tiny(depth=3, downsample=downsample)
    with torch.inference_mode():
        out = model(torch.randn(2, 1, *hw))
    assert out.shape == (2, 3, *hw)
    assert torch.isfinite(out).all()


def test_padding_is_cropped_back_not_shifted() -> None:
    """A pixel's logits depend on the image around it, not on where the padding went:
    predicting a crop of an image equals the same region of the full prediction away from
    the borders (only possible if the crop-back is aligned)."""
    model = tiny(depth=2)
    x = torch.randn(1, 1, 128, 128)
    with torch.inference_mode():
        full = model(x)
        part = model(x[:, :, :123, :121])  # needs padding to 124 x 124
    # A region far (> this tiny net's receptive field, ~45 px) from the padded edges.
    assert torch.allclose(full[..., 10:60, 10:60], part[..., 10:60, 10:60], atol=1e-5)
    assert not torch.allclose(full[..., 110:123, 110:121], part[..., 110:, 110:], atol=1e-5)


def test_downsample_runs_the_network_at_lower_resolution() -> None:
    """downsample=2: the first conv sees the image averaged over 2x2 blocks, the logits
    come back at full size, and a crop at the origin still matches the whole image (the
    averaging grid is anchored there like the pooling grid)."""
    m = tiny(depth=2, downsample=2)
    seen: list[tuple[int, ...]] = []
    m.down[0][0].register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
    x = torch.randn(1, 1, 128, 128)
    with torch.inference_mode():
        full = m(x)
        part = m(x[:, :, :123, :121])
    assert seen[0] == (1, 1, 64, 64)
    assert full.shape == (1, 3, 128, 128) and part.shape == (1, 3, 123, 121)
    assert m.cfg.size_multiple == 8
    assert torch.allclose(full[..., 10:60, 10:60], part[..., 10:60, 10:60], atol=1e-5)
    # the averaged input is what the network gets: a 2x2 checkerboard is invisible to it
    board = (torch.arange(64)[:, None] + torch.arange(64)[None]) % 2
    with torch.inference_mode():
        flat = m(torch.full((1, 1, 64, 64), 0.5))
        checker = m(board[None, None].float())
    assert torch.allclose(flat, checker, atol=1e-5)
    with pytest.raises(ValueError, match="downsample"):
        tiny(downsample=9)


def test_config_options() -> None:
    m = tiny(in_channels=3, n_classes=2, hidden=8, depth=3, dropout=0.3, batchnorm=False)
    assert m.cfg.hidden == 8
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())
    assert any(isinstance(x, torch.nn.Dropout2d) for x in m.modules())
    assert m(torch.randn(1, 3, 32, 40)).shape == (1, 2, 32, 40)
    bn = tiny(batchnorm=True)
    assert any(isinstance(x, torch.nn.BatchNorm2d) for x in bn.modules())
    # width doubles per level: the bottleneck has hidden * 2**depth channels
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert max(c.out_channels for c in convs) == 8 * 2**3


def test_dropout_only_in_train_mode() -> None:
    m = tiny(dropout=0.5)
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), m(x))  # eval: deterministic
        m.train()
        assert not torch.equal(m(x), m(x))


def test_xavier_and_kaiming_init_differ() -> None:
    k = tiny(init="kaiming", hidden=8)
    x = tiny(init="xavier", hidden=8)
    wk = k.down[0][0].weight.detach()
    wx = x.down[0][0].weight.detach()
    assert not torch.allclose(wk, wx)
    # kaiming normal (fan_out, relu) has std sqrt(2 / (9 * 8)); xavier uniform's bound is
    # sqrt(6 / (9 + 72)): the second conv of level 0 tells them apart clearly.
    w2k = k.down[0][3].weight.detach()
    w2x = x.down[0][3].weight.detach()
    assert w2k.std() == pytest.approx((2 / 72) ** 0.5, rel=0.2)
    assert w2x.abs().max() <= (6 / (72 + 72)) ** 0.5 + 1e-6
    with pytest.raises(ValueError):
        tiny(init="orthogonal")


@pytest.mark.parametrize("downsample", [1, 2])
def test_scripted_and_traced_match_eager(downsample: int) -> None:
    m = tiny(depth=3, downsample=downsample)
    scripted = torch.jit.script(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(m, torch.randn(1, 1, 67, 131))
    for shape in [(1, 1, 67, 131), (2, 1, 40, 96)]:
        x = torch.randn(*shape)
        with torch.inference_mode():
            ref = m(x)
            assert torch.allclose(scripted(x), ref, atol=1e-5)
            assert torch.allclose(traced(x), ref, atol=1e-5)


@pytest.mark.parametrize("downsample", [1, 2])
def test_onnx_dynamic_height_width(downsample: int) -> None:
    ort = pytest.importorskip("onnxruntime")
    m = tiny(depth=3, downsample=downsample)
    buf = io.BytesIO()
    axes = {0: "n", 2: "h", 3: "w"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            m,
            (torch.randn(1, 1, 67, 131),),
            buf,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": axes, "logits": axes},
            opset_version=17,
            dynamo=False,
        )
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for shape in [(1, 1, 67, 131), (2, 1, 48, 37)]:
        x = torch.randn(*shape)
        got = sess.run(None, {"image": x.numpy()})[0]
        with torch.inference_mode():
            ref = m(x).numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-4


def test_learns_a_simple_task() -> None:
    """A few steps on a trivially separable image reduce the loss a lot: the gradients
    flow through the skips and the head (a broken wiring would stall)."""
    torch.manual_seed(0)
    m = tiny(n_classes=2, hidden=4, depth=2).train()
    x = torch.zeros(2, 1, 32, 32)
    x[:, :, 8:24, 8:24] = 1.0
    y = (x[:, 0] > 0.5).long()
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    m.eval()
    with torch.inference_mode():
        assert (m(x).argmax(1) == y).float().mean() > 0.95
