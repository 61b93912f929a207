"""Two CPU processes with gloo train a few steps and end with identical weights."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_dir: str, minutes: float = 0.0) -> None:
    import os

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
        RANK=str(rank), LOCAL_RANK=str(rank),
    )  # fmt: skip
    torch.set_num_threads(1)
    from test_train import make_samples, tiny_cfg

    from cellseg_gui.core.events import Finished
    from cellseg_gui.core.training import distributed as dist
    from cellseg_gui.core.training.train import fit

    captured: list = []
    real_wrap = dist.wrap

    def spy_wrap(model, device):  # keep a handle on the live model to compare weights
        captured.append(model)
        return real_wrap(model, device)

    dist.wrap = spy_wrap
    if minutes and rank == 1:  # this rank's clock runs fast: the ranks must still agree
        import time
        import types

        import cellseg_gui.core.training.train as train_mod

        start = time.perf_counter()
        train_mod.time = types.SimpleNamespace(
            perf_counter=lambda: start + 1.7 * (time.perf_counter() - start)
        )
    try:
        cfg = tiny_cfg(epochs=2, steps_per_epoch=4, schedule="cosine")
        if minutes:
            cfg.epochs, cfg.minutes = 0, minutes
        out = Path(out_dir) / "ddp.cellseg"
        events = list(fit(make_samples(), cfg, out_path=out))
        fins = [e for e in events if isinstance(e, Finished)]
        assert not fins or fins[-1].reason == "done", fins[-1]
        if minutes and fins:  # rank 0 reports: the run ended on its time limit
            assert "time limit" in fins[-1].message, fins[-1].message
        state = {k: v.detach().clone() for k, v in captured[0].state_dict().items()}
        torch.save({"n_events": len(events), "state": state}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.cleanup()


@pytest.mark.timeout(300)
def test_two_gloo_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    port = _free_port()
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=False)
    b = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert a["state"] and set(a["state"]) == set(b["state"])
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k
    # rank 0 alone reports and writes
    assert a["n_events"] > 0 and b["n_events"] == 0
    assert (tmp_path / "ddp.cellseg").exists()


@pytest.mark.timeout(300)
def test_time_limited_ranks_share_one_clock(tmp_path: Path) -> None:
    """With --minutes, the learning rate and the stop follow the elapsed time; one rank's
    clock running fast must neither change its rate (weights would part) nor stop it at
    another step than the others (a rank would wait forever in a collective)."""
    port = _free_port()
    mp.spawn(_worker, args=(2, port, str(tmp_path), 0.05), nprocs=2, join=True)
    a = torch.load(tmp_path / "rank0.pt", weights_only=False)
    b = torch.load(tmp_path / "rank1.pt", weights_only=False)
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k
