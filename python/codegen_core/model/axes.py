"""Logical axis names for every parameter and activation, and the one table mapping them
to mesh axes (MaxText style): model code names what an axis *is*, never which devices
hold it. ``LOGICAL_AXIS_RULES`` is the default mapping for a ``("data", "fsdp", "tensor")``
mesh; a trainer may pass its own rules to :func:`axis_rules`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# ---- parameter axes ----------------------------------------------------------------------
VOCAB = "vocab"
EMBED = "embed"
HEADS = "heads"
HEAD_DIM = "head_dim"
QKV = "qkv"  # the stacked (q, k, v) axis of the fused projection
MLP = "mlp"
GATE_UP = "gate_up"  # the stacked (gate, up) axis of the fused SwiGLU input projection
NORM = "norm"
LAYERS = "layers"  # leading axis of stacked (scanned) layer parameters

# ---- activation axes ---------------------------------------------------------------------
BATCH = "activation_batch"
LENGTH = "activation_length"
ACT_EMBED = "activation_embed"
ACT_HEADS = "activation_heads"
ACT_HEAD_DIM = "activation_head_dim"
ACT_MLP = "activation_mlp"
ACT_VOCAB = "activation_vocab"
CACHE_BATCH = "cache_batch"
CACHE_LENGTH = "cache_length"
CACHE_HEADS = "cache_heads"
CACHE_HEAD_DIM = "cache_head_dim"

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis (or tuple of mesh axes, or None = replicated)
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    (VOCAB, "tensor"),
    (EMBED, "fsdp"),
    (HEADS, "tensor"),
    (HEAD_DIM, None),
    (QKV, None),
    (MLP, "tensor"),
    (GATE_UP, None),
    (NORM, None),
    (LAYERS, None),
    (BATCH, ("data", "fsdp")),
    (LENGTH, None),
    (ACT_EMBED, None),
    (ACT_HEADS, "tensor"),
    (ACT_HEAD_DIM, None),
    (ACT_MLP, "tensor"),
    (ACT_VOCAB, "tensor"),
    (CACHE_BATCH, ("data", "fsdp")),
    (CACHE_LENGTH, None),
    (CACHE_HEADS, "tensor"),
    (CACHE_HEAD_DIM, None),
)

_ACTIVE: list[tuple[Mesh, dict[str, Any]]] = []


def logical_to_spec(
    names: Sequence[str | None], rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES
) -> PartitionSpec:
    """PartitionSpec for an array whose axes carry ``names`` (unknown names: replicated).

    A mesh axis is used at most once per array: a later logical axis mapping to a mesh axis
    already taken stays replicated.
    """
    table = dict(rules)
    used: set[str] = set()
    out: list[Any] = []
    for name in names:
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if a not in used)
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*out)


def param_shardings(
    axes_tree: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES
) -> Any:
    """NamedSharding pytree for a parameter-axes pytree (see ``transformer.param_axes``)."""
    return jax.tree.map(
        lambda names: NamedSharding(mesh, logical_to_spec(names, rules)),
        axes_tree,
        is_leaf=lambda x: isinstance(x, tuple),
    )


@contextlib.contextmanager
def axis_rules(mesh: Mesh, rules: Sequence[tuple[str, Any]] = LOGICAL_AXIS_RULES) -> Iterator[None]:
    """Within this context, :func:`constrain` applies sharding constraints on ``mesh``."""
    _ACTIVE.append((mesh, dict(rules)))
    try:
        yield
    finally:
        _ACTIVE.pop()


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
    """Annotate activation ``x`` with logical axis ``names``; a no-op outside axis_rules."""
    if len(names) != x.ndim:
        raise ValueError(f"{len(names)} axis names {tuple(names)} for an array of shape {x.shape}")
    if not _ACTIVE:
        return x
    mesh, rules = _ACTIVE[-1]
    spec = logical_to_spec(names, tuple(rules.items()))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
