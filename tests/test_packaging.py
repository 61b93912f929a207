"""The wheel a user installs: it carries the resources, installs into a fresh virtual
environment, and the installed ``cellseg-gui`` opens the sample and takes a screenshot.

Slow (builds a wheel, creates a venv): ``python -m pytest -m slow tests/test_packaging.py``.
The venv reuses the system's torch, Qt etc. (``--system-site-packages``) so the test needs
no network; the package itself comes only from the wheel (checked).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = [
    "cellseg-gui.svg",
    *(f"cellseg-gui-{s}.png" for s in (16, 32, 48, 64, 128, 256)),
    "cellseg-gui.desktop",
    "io.github.cellseg_gui.metainfo.xml",
    "help.md",
]
SKIP_COPY = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
    ".venv", "out", "*.pyc",
)  # fmt: skip


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def _setuptools_builds_wheels() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("build", reason="building the wheel needs the 'build' package")
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy: setuptools leaves build/ and *.egg-info in the source tree.
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=SKIP_COPY)
    # No isolation: uses the installed setuptools, so the test needs no package index.
    # setuptools >= 70.1 builds wheels itself; the "wheel" package in build-system.requires
    # is then unneeded, so its absence must not stop the build.
    cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp)]
    if _setuptools_builds_wheels():
        cmd.append("--skip-dependency-check")
    _run(cmd, cwd=src)
    wheels = list(tmp.glob("cellseg_gui-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_carries_resources(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [r for r in RESOURCES if f"cellseg_gui/resources/{r}" not in names]
    assert not missing, f"resources missing from the wheel: {missing}"
    assert "cellseg_gui/app/main.py" in names
    assert not any(n.startswith(("tests/", "benchmarks/", "packaging/")) for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "cellseg-gui = cellseg_gui.app.main:main" in text
    assert "cellseg = cellseg_gui.cli:main" in text


def test_installed_app_takes_screenshot(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    py = bindir / "python"
    # The app's dependencies (torch, Qt...) come from the environment running the tests,
    # which may itself be a venv that --system-site-packages would not reach: point the new
    # venv at it with a .pth file (plain paths, so its editable-install hooks stay out).
    inner = _run([str(py), "-c", "import site; print(site.getsitepackages()[0])"]).stdout.strip()
    outer = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(inner) / "outer-env.pth").write_text("\n".join(outer) + "\n")
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["QT_QPA_PLATFORM"] = "offscreen"
    # The package must come from the wheel, not the checkout, and find its resources.
    probe = _run(
        [str(py), "-c", "import cellseg_gui as c; print(c.__file__); "
         "print(c.resource_path('help.md'))"],
        cwd=tmp_path, env=env,
    )  # fmt: skip
    pkg_file, help_md = probe.stdout.split()
    assert Path(pkg_file).resolve().is_relative_to(venv.resolve()), pkg_file
    assert Path(help_md).is_file() and Path(help_md).resolve().is_relative_to(venv.resolve())

    shot = tmp_path / "out.png"
    _run([str(bindir / "cellseg-gui"), "--sample", "--screenshot", str(shot)],
         cwd=tmp_path, env=env, timeout=300)  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 5_000
    from PIL import Image, ImageStat

    img = Image.open(shot).convert("RGB")
    assert img.width >= 400 and img.height >= 300, img.size
    # a blank or single-colour window would have (almost) no variation
    assert max(ImageStat.Stat(img).stddev) > 10
    assert len(img.getcolors(maxcolors=1 << 20) or []) > 100
