"""Training-data pipeline: filters, exact and MinHash near-dedup, tokenize-and-pack, loader.

Stages (each a small module): :mod:`.filters` -> :mod:`.exact` -> :mod:`.minhash` +
:mod:`.lsh` (near dedup in C++) -> :mod:`.pack` -> :mod:`.shards` -> :mod:`.loader`;
:mod:`.prepare` runs them all and :mod:`.cli` exposes ``codegen-core data ...``.
"""

from __future__ import annotations
