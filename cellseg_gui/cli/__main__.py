"""``python -m cellseg_gui.cli`` (what torchrun runs)."""

import sys

from cellseg_gui.cli import main

sys.exit(main())
