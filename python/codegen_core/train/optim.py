"""jaxformer's optimizer through optax: AdamW, decoupled weight decay on matrices, global-norm
clipping, linear warm-up then cosine decay to ``end_lr``, then constant.

Weight decay mask: a parameter is decayed when it is a matrix of the *unstacked* model (two
or more logical axes besides ``layers``): attention qkv/out, MLP kernels, lm_head and (with
``decay_embedding``, the default, as jaxformer/mesh-transformer-jax decay every matrix) the
token embedding. Norm scales and biases are never decayed. The mask is computed from
``transformer.param_axes``, because with stacked layers a bias is 2-D.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from codegen_core.model import axes as ax
from codegen_core.model import transformer
from codegen_core.model.config import CodeGenConfig
from codegen_core.train.config import OptimSection


def schedule(cfg: OptimSection) -> optax.Schedule:
    """Linear 0 -> lr over warmup_steps, cosine lr -> end_lr over decay_steps, then end_lr."""
    end_lr = cfg.end_lr if cfg.end_lr is not None else 0.1 * cfg.lr
    alpha = end_lr / cfg.lr if cfg.lr > 0 else 0.0
    cosine = optax.cosine_decay_schedule(cfg.lr, cfg.decay_steps, alpha=alpha)
    if cfg.warmup_steps == 0:
        return cosine
    warmup = optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
    return optax.join_schedules([warmup, cosine], [cfg.warmup_steps])


def decay_mask(config: CodeGenConfig, *, decay_embedding: bool = True) -> Any:
    """Bool pytree (the stacked params' structure): True where weight decay applies."""
    axes_tree = transformer.param_axes(config, stacked=True)

    def is_matrix(names: tuple[str, ...]) -> bool:
        return len([n for n in names if n != ax.LAYERS]) >= 2

    mask = jax.tree.map(is_matrix, axes_tree, is_leaf=lambda x: isinstance(x, tuple))
    if not decay_embedding:
        mask = {**mask, "wte": {"embedding": False}}
    return mask


def make_optimizer(cfg: OptimSection, model_config: CodeGenConfig) -> optax.GradientTransformation:
    """The full chain; the updates it returns are to be *added* to the params."""
    parts = []
    if cfg.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(cfg.clip_norm))
    parts.append(
        optax.adamw(
            schedule(cfg),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=decay_mask(model_config, decay_embedding=cfg.decay_embedding),
        )
    )
    return optax.chain(*parts)
