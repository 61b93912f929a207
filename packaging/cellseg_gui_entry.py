"""PyInstaller entry script: the frozen ``cellseg-gui`` binary starts here.

freeze_support() first, so a multiprocessing child (torch DataLoader workers) started from
the frozen binary runs its task instead of opening a second window.
"""

import multiprocessing

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from cellseg_gui.app.main import main

    raise SystemExit(main())
