"""jaxformer's optimizer through optax: AdamW, decoupled weight decay on matrices, global-norm
clipping, linear warm-up then cosine decay to ``end_lr``, then constant.

Weight decay mask: a parameter is decayed when it is a matrix of the *unstacked* model (two
or more logical axes besides ``layers``): attention qkv/out, MLP kernels, lm_head and (with
``decay_embedding``, the default, as jaxformer/mesh-transformer-jax decay every matrix) the
token embedding. Norm scales and biases are never decayed. The mask is computed from
``transformer.param_axes``, because with stacked layers a bias is 2-D.

Clipping is optax's ``clip_by_global_norm`` rule (the same select; the scale a multiply, as
in torch) with the norm computed by :func:`global_norm` and taken from the step when it
passes one (``grad_norm=`` extra argument: the step computes the norm anyway, for its
metrics and the finite check, so the gradients are read for it once, not twice).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from codegen_core.model import axes as ax
from codegen_core.model import cpu_ops, transformer
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


def global_norm(tree: Any) -> jax.Array:
    """The L2 norm of all leaves together (``optax.tree.norm``), fp32.

    Each leaf's sum of squares is :func:`cpu_ops.sum_squares`: on the CPU backend with a
    single device, a native kernel (XLA FFI) that reads the leaf once on every core and
    accumulates in double, deterministically; everywhere else (accelerators, and any
    multi-device mesh, where a custom call would not be partitioned) a full contraction of the
    leaf with itself (a dot, no reshape, so a sharded leaf needs no gather). XLA:CPU runs
    every reduction form (the dot, ``sum(x * x)``) as a materialised ``x * x`` plus windowed
    reductions, several times slower than one read pass (model/cpu_ops.py has the numbers).
    """
    total = jnp.zeros((), jnp.float32)
    for x in jax.tree.leaves(tree):
        total = total + cpu_ops.sum_squares(x)
    return jnp.sqrt(total)


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
    """``optax.clip_by_global_norm(max_norm)`` (same state, same rule: updates scaled by
    ``max_norm / norm`` when the norm is at least ``max_norm``), with the norm of the
    updates passed in as ``grad_norm=`` when the caller has it, else computed."""

    def update(updates: Any, state: Any, params: Any = None, *, grad_norm: Any = None,
               **extra_args: Any) -> tuple[Any, Any]:  # fmt: skip
        del params, extra_args
        g_norm = global_norm(updates) if grad_norm is None else grad_norm
        trigger = jnp.squeeze(g_norm < max_norm)
        # a scalar factor, multiplied (as torch's clip_grad_norm_ does), not optax's
        # ``t / norm * max_norm``: XLA fuses a multiply by a scalar into each consumer (the
        # two moment updates) but materialises a divide, a write and two reads of every
        # gradient more per step
        factor = max_norm / g_norm

        def clip(t: jax.Array) -> jax.Array:
            return jax.lax.select(trigger, t, t * factor.astype(t.dtype))

        return jax.tree.map(clip, updates), state

    return optax.GradientTransformationExtraArgs(optax.init_empty_state, update)


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
        parts.append(clip_by_global_norm(cfg.clip_norm))
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
