"""One window per project, and what the window says when it opens a project: the lock
file a second window is told about, and the non-modal notices for a project that is open
elsewhere or whose project file did not fit (a modal dialog would stop a ``--screenshot``
run or a test)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QLockFile
from PySide6.QtWidgets import QMessageBox, QWidget

from cellseg_gui.core.data.project import Project

LOCK_FILE = ".cellseg.lock"  # held while a window has the project open


class ProjectLock:
    """The open project's lock file (``QLockFile``). A lock whose process has ended is
    stale and recovered; a live one held elsewhere is named by ``holder``."""

    def __init__(self) -> None:
        self._lock: QLockFile | None = None
        self.holder: tuple[int, str] = (0, "")  # (pid, host) of the window that has it

    @property
    def held(self) -> bool:
        return self._lock is not None and self._lock.isLocked()

    def acquire(self, folder: Path) -> bool:
        """Take the lock of ``folder`` (releasing any other this window held). False when
        another window has it; True when held here, or when the folder allows no lock file
        (read-only: there is nothing to protect it from)."""
        path = (Path(folder) / LOCK_FILE).resolve()
        if self.held and Path(self._lock.fileName()).resolve() == path:
            return True  # this window opens its own project again (after a rescan)
        self.release()
        lock = QLockFile(str(path))
        lock.setStaleLockTime(0)  # only a lock whose process has ended is stale
        if lock.tryLock(0):
            self._lock = lock
            return True
        if lock.error() != QLockFile.LockError.LockFailedError:
            return True
        info = lock.getLockInfo()  # (pid, host, application)
        self.holder = (int(info[-3]), str(info[-2])) if len(info) >= 3 else (0, "")
        return False

    def release(self) -> None:
        if self.held:
            self._lock.unlock()
        self._lock = None


def _notice(parent: QWidget, title: str, text: str, details: str) -> QMessageBox:
    box = QMessageBox(QMessageBox.Icon.Warning, title, "", parent=parent)
    box.setText(text)
    box.setInformativeText(details)
    box.setModal(False)
    return box


def locked_notice(
    parent: QWidget, project: Project, holder: tuple[int, str], edit_anyway: Callable[[], None]
) -> QMessageBox:
    pid, host = holder
    box = _notice(
        parent, "Project open elsewhere",
        f"{project.folder.name} is open in another cellseg-gui window (process {pid} "
        f"on {host or 'this computer'}), so it opened read-only here.",
        "Nothing is painted or saved in this window. Editing anyway is safe for masks "
        "(a save merges what the other window wrote), but both windows will then save "
        "settings and models, and this window's strokes have no crash journal.",
    )  # fmt: skip
    edit = box.addButton("Edit anyway", QMessageBox.ButtonRole.DestructiveRole)
    box.addButton("Stay read-only", QMessageBox.ButtonRole.AcceptRole)
    edit.clicked.connect(edit_anyway)
    box.show()
    return box


def problems_notice(parent: QWidget, project: Project) -> QMessageBox:
    """What was wrong with the project file: the window opened with defaults for those
    parts, and the file is copied to .bak before it is first rewritten."""
    box = _notice(
        parent, "Problems in the project file",
        f"Opened {project.folder.name} with defaults where its project file did not fit.",
        "\n".join(f"• {p}" for p in project.problems)
        + "\n\nYour file stays as it is until the project is next saved; it is then "
        "kept as cellseg-project.json.bak.",
    )  # fmt: skip
    box.show()
    return box
