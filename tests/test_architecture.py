"""The import rules of ../shared/DESIGN.md, as import-linter contracts in pyproject.toml:
core imports no Qt, the CLI no GUI code, widgets no torch or workers, workers and widgets
not each other, the bundle metadata, project, registry, Workspace and editing modules no
torch, and core's subpackages only those below them (data; editing and scores; the model;
training; exports). Imports inside functions count, so a lazy ``import PySide6`` in core/training/train.py fails here."""

from __future__ import annotations

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept(monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)
    status = lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "0 broken" in out and "6 kept" in out
