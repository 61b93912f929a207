"""Import rules from DESIGN.md, checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after(stmt: str) -> set[str]:
    code = f"import sys\n{stmt}\nprint('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "stmt",
    [
        "import cellseg_gui",
        "import cellseg_gui.core",
        "import cellseg_gui.core.config, cellseg_gui.core.events, cellseg_gui.core.jobs",
        "import cellseg_gui.core.data.imageio, cellseg_gui.core.data.dataset",
        "import cellseg_gui.core.data.masks, cellseg_gui.core.data.normalize",
        "import cellseg_gui.core.model.bundle_meta, cellseg_gui.core.model.model_registry",
        "import cellseg_gui.core.data.project, cellseg_gui.core.data.fileio, cellseg_gui.core.data.split",
    ],
)
def test_cheap_imports_load_neither_torch_nor_qt(stmt: str) -> None:
    mods = _modules_after(stmt)
    assert "torch" not in mods
    assert not any(m.startswith(("PySide6", "pyqtgraph")) for m in mods)


def test_core_and_cli_never_import_gui_code() -> None:
    mods = _modules_after("import cellseg_gui.cli")
    assert not any(
        m.startswith(
            (
                "PySide6",
                "pyqtgraph",
                "cellseg_gui.app",
                "cellseg_gui.widgets",
                "cellseg_gui.workers",
            )
        )
        for m in mods
    )
