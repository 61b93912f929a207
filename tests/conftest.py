"""Shared test set-up: Qt offscreen, the real-data folder, and tiny synthetic data."""

from __future__ import annotations

import os
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
