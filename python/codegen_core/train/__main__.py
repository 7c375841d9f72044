"""``python -m codegen_core.train [--config NAME] [key=value ...]``."""

from __future__ import annotations

import sys

from codegen_core.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
