"""``codegen-core quickstart``: the whole job on this machine in minutes, no download.

Prepares the running interpreter's standard library (filters, exact and near dedup, tokenize,
pack, a held-out split), trains a tiny CodeGen with checkpoints, samples, infills, runs a
HumanEval slice and an MTPB-style problem through the sandbox, and writes a summary and an
HTML report. Re-running resumes. See :func:`codegen_core.quickstart.cli.run_quickstart`.
"""

from __future__ import annotations

from codegen_core.quickstart.cli import run_quickstart
from codegen_core.quickstart.stages import QuickstartConfig

__all__ = ["QuickstartConfig", "run_quickstart"]
