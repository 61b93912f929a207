"""Shared test set-up: Qt offscreen, the real-data folder, and tiny synthetic data."""

from __future__ import annotations

import faulthandler
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# No background device probe (it imports torch 1.5 s after a window opens) unless a test
# asks for it: it would compete for the CPU with timing assertions such as "Stop ends a
# run within 2 s". The start-up tests turn it on explicitly in their subprocess.
os.environ.setdefault("CELLSEG_NO_WARMUP", "1")

ROOT = Path(__file__).resolve().parents[1]
# Real microscopy data: one setting, defaulting to ../shared/data beside the checkout.
DATA_DIR = Path(os.environ.get("CELLSEG_TEST_DATA", ROOT.parent / "shared" / "data"))


# Last-resort watchdog. pytest-timeout needs the GIL to act, and a GIL/Qt-lock deadlock
# (one once ran CI out of time) leaves it waiting for ever. faulthandler's watchdog is a
# C thread: after WATCHDOG_S seconds in one test it prints every thread's stack to the
# terminal and ends the run with exit status 1.
WATCHDOG_S = 900
_TERMINAL_FD: int | None = None


def pytest_configure(config):
    global _TERMINAL_FD
    _TERMINAL_FD = os.dup(sys.__stderr__.fileno())  # before capture redirects fd 2


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if _TERMINAL_FD is not None:
        faulthandler.dump_traceback_later(WATCHDOG_S, exit=True, file=_TERMINAL_FD)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


def shared_dataset(name: str) -> Path:
    """Path of a real dataset folder, or skip with the reason."""
    path = DATA_DIR / name
    if not (path / "images").is_dir():
        pytest.skip(f"real data {path} is absent (set CELLSEG_TEST_DATA)")
    return path


@pytest.fixture
def phc_dir() -> Path:
    return shared_dataset("usiigaci-phc")


@pytest.fixture
def em_dir() -> Path:
    return shared_dataset("isbi2012-em")


@pytest.fixture
def nuclei_dir() -> Path:
    return shared_dataset("dsb2018-nuclei")
