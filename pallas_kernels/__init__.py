"""Pallas kernels (flash attention, rotary) with plain-JAX references.

Installed as ``codegen_core.pallas_kernels``.
"""

from __future__ import annotations
