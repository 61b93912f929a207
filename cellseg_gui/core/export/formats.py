"""TorchScript and ONNX exports of a bundle, each checked against the torch model before
it replaces the target file: two inputs of different, non-multiple sizes must give the
same output within ``EXPORT_TOLERANCE``, else ``ExportError`` and the old file stays.
Both carry the bundle's JSON (TorchScript: ``_extra_files["cellseg.json"]``; ONNX:
``metadata_props["cellseg"]``), so ``core.model.bundle.load_predictor`` uses them like a
bundle."""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellseg_gui.core.config import ModelConfig
from cellseg_gui.core.data.fileio import atomic_path
from cellseg_gui.core.model.bundle import Bundle, _ort_session, load_bundle
from cellseg_gui.core.model.bundle_meta import META_NAME, ONNX_META_KEY, ExportError, _dumps
from cellseg_gui.core.model.unet import UNet

__all__ = ["EXPORT_TOLERANCE", "export_onnx", "export_torchscript", "onnx_bytes"]

EXPORT_TOLERANCE = 1e-4


def _as_bundle(bundle: Bundle | str | os.PathLike[str]) -> Bundle:
    return bundle if isinstance(bundle, Bundle) else load_bundle(bundle, "cpu")


def _cpu_model(bundle: Bundle) -> UNet:
    model = copy.deepcopy(bundle.model).to("cpu").eval()
    return model


def _check_inputs(cfg: ModelConfig) -> list[torch.Tensor]:
    """Two random inputs of different, non-multiple sizes: proves the export's height and
    width are really dynamic (a graph frozen at one size fails the second)."""
    gen = torch.Generator().manual_seed(0)
    return [
        torch.rand(1, cfg.in_channels, 96, 80, generator=gen),
        torch.rand(2, cfg.in_channels, 67, 131, generator=gen),
    ]


def _verify(path: Path, run: Any, model: UNet) -> float:
    worst = 0.0
    with torch.inference_mode():
        for x in _check_inputs(model.cfg):
            ref = model(x).numpy()
            try:
                got = np.asarray(run(x))
            except Exception as exc:
                raise ExportError(path, f"export fails on input {tuple(x.shape)}: {exc}") from None
            if got.shape != ref.shape:
                raise ExportError(
                    path, f"export gives shape {got.shape} for {tuple(x.shape)}, not {ref.shape}"
                )
            diff = float(np.max(np.abs(got - ref)))
            if not diff < EXPORT_TOLERANCE:  # also catches NaN
                raise ExportError(
                    path,
                    f"export differs from the torch model by {diff:.3g} "
                    f"(limit {EXPORT_TOLERANCE:g}) on input {tuple(x.shape)}",
                )
            worst = max(worst, diff)
    return worst


def export_torchscript(bundle: Bundle | str | os.PathLike[str], path: str | os.PathLike[str]):
    """Script the model, embed the meta, verify the written file, then publish it.
    Returns the max abs difference found."""
    b = _as_bundle(bundle)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = _cpu_model(b)
    try:
        scripted = torch.jit.script(model)
    except Exception as exc:
        raise ExportError(path, f"cannot script the model: {exc}") from None
    with atomic_path(path) as tmp:
        torch.jit.save(scripted, str(tmp), _extra_files={META_NAME: _dumps(b.meta)})
        loaded = torch.jit.load(str(tmp), map_location="cpu").eval()
        diff = _verify(path, lambda x: loaded(x).numpy(), model)
    return diff


def onnx_bytes(
    model: torch.nn.Module,
    in_channels: int,
    *,
    opset: int,
    input_name: str = "image",
    output_name: str = "logits",
    axis_names: tuple[str, str] = ("height", "width"),
) -> bytes:
    """ONNX of ``model`` with dynamic batch, height and width, traced at an odd size so
    the padding path is the one recorded. Shared by the plain ONNX export and the
    bioimage.io package."""
    import warnings

    example = torch.rand(1, in_channels, 67, 131)
    axes = {0: "batch", 2: axis_names[0], 3: axis_names[1]}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buf,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: axes, output_name: axes},
            opset_version=opset,
            dynamo=False,
        )
    return buf.getvalue()


def export_onnx(
    bundle: Bundle | str | os.PathLike[str], path: str | os.PathLike[str], opset: int = 17
):
    """Export to ONNX with dynamic batch, height and width; meta in ``metadata_props``;
    verified with onnxruntime before publishing. Returns the max abs difference found."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - optional extra
        raise ExportError(
            path, "ONNX support is not installed (pip install cellseg-gui[onnx])"
        ) from None
    b = _as_bundle(bundle)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = _cpu_model(b)
    try:
        data = onnx_bytes(model, model.cfg.in_channels, opset=opset)
        proto = onnx.load_from_string(data)
    except Exception as exc:
        raise ExportError(path, f"ONNX export failed: {str(exc).splitlines()[0]}") from None
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key = ONNX_META_KEY
    entry.value = _dumps(b.meta)
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
        session = _ort_session(str(tmp))
        name = session.get_inputs()[0].name
        diff = _verify(path, lambda x: session.run(None, {name: x.numpy()})[0], model)
    return diff
