from __future__ import annotations

import sys

from codegen_core.cli import main

sys.exit(main())
