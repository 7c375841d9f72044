"""Training CodeGen-family models: config, optimizer, train step, loop, checkpoints.

``codegen-core train --config tiny data.dir=DATA run.dir=RUN`` (or ``python -m
codegen_core.train``) runs :func:`codegen_core.train.loop.train` on a
:class:`codegen_core.train.config.Config`. Submodules are imported on use: importing this
package stays cheap.
"""

from __future__ import annotations
