"""On a CUDA machine: a real torch.cuda.OutOfMemoryError makes the worker retry once with
the smaller job and say so; a second one fails with a clean message and a hint."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from cellseg_gui.core.events import DONE, FAILED, Finished, Message, Started  # noqa: E402
from cellseg_gui.workers.job_worker import JobWorker  # noqa: E402


def job(gib: float):
    def run():
        yield Started(job="fit", device="cuda:0", precision="fp32")
        x = torch.empty(int(gib * 2**28), dtype=torch.float32, device="cuda")  # gib GiB
        yield Message(f"allocated {x.numel() * 4 / 2**30:.1f} GiB")
        del x
        yield Finished(DONE)

    return run


def test_real_cuda_oom_retries_once_with_half(qtbot):
    w = JobWorker(
        job(4096.0), on_oom=lambda: (job(0.5), "GPU out of memory: retrying with batch 4")
    )
    msgs = []
    w.message.connect(lambda t, lvl: msgs.append((t, lvl)))
    with qtbot.waitSignal(w.done, timeout=60000):
        w.start()
    assert w.result.reason == DONE
    assert msgs[0] == ("GPU out of memory: retrying with batch 4", "warning")
    assert msgs[1][0] == "allocated 0.5 GiB"
    assert w.wait(5000)


def test_real_cuda_oom_twice_fails_cleanly(qtbot):
    w = JobWorker(job(4096.0), on_oom=lambda: (job(2048.0), "retrying"))
    failed = []
    w.failed.connect(failed.append)
    with qtbot.waitSignal(w.done, timeout=60000):
        w.start()
    assert w.result.reason == FAILED and w.result.hint
    assert failed and "Traceback" not in failed[0] and "memory" in failed[0].lower()
    assert torch.cuda.memory_allocated() == 0
    assert w.wait(5000)


def test_form_defaults_fit_the_gpu(qtbot, tmp_path, monkeypatch):
    from test_training_controller import real_project, real_window

    w = real_window(qtbot, monkeypatch, real_project(tmp_path / "p").folder, warmup=True)
    t = w.training
    qtbot.waitUntil(lambda: t.device_type == "cuda", timeout=60000)
    assert "cuda" in t.panel.device_label.text()
    assert t.panel.form.get_config().model.hidden == 32
    t.shutdown()
