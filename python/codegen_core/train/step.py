"""The loss and the train step: pure functions of (state, batch), jitted with shardings.

State is ``{"params": fp32 stacked params, "opt_state": optax state, "step": int32 ()}``.
A batch is a dict of (global_batch, T) arrays: ``tokens``, ``segment_ids``, ``positions``,
optionally ``loss_mask`` and ``prefix_mask`` (from ``objectives.apply_objectives``).

Loss: logits at position t predict ``tokens[t + 1]``; the prediction counts iff
``segment_ids[t + 1] == segment_ids[t] != 0`` and ``loss_mask[t + 1]``. The loss is the sum
of the counted cross-entropies over the *global* batch divided by their count, so gradient
accumulation (a scan over micro-batches summing both) and any sharding give the same
number. The optional z-loss ``z_loss * logsumexp(logits)**2`` is averaged the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from codegen_core.model import axes as ax
from codegen_core.model import cpu_ops, transformer
from codegen_core.model.config import CodeGenConfig
from codegen_core.train import optim

State = dict[str, Any]
Batch = Mapping[str, jax.Array]

BATCH_KEYS = ("tokens", "segment_ids", "positions", "loss_mask", "prefix_mask")


@dataclass(frozen=True)
class StepOptions:
    """The static knobs of the step (hashable: part of the compiled program's identity)."""

    compute_dtype: str = "float32"  # params are cast to it for the forward; masters stay fp32
    remat: str = "none"
    z_loss: float = 0.0
    micro_batches: int = 1
    attn_impl: str = "auto"


def target_mask(batch: Batch) -> jax.Array:
    """(B, T - 1) bool: which next-token predictions count (see the module doc)."""
    seg = batch["segment_ids"]
    mask = (seg[:, 1:] == seg[:, :-1]) & (seg[:, :-1] != 0)
    if "loss_mask" in batch:
        mask = mask & batch["loss_mask"][:, 1:].astype(bool)
    return mask


@jax.custom_vjp
def head_lse_picked(
    x: jax.Array, kernel: jax.Array, bias: jax.Array, targets: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The LM head and what cross-entropy needs of it, as one function with a written-out
    gradient: x (N, E) final hidden states, kernel (V, E), bias (V,), targets (N,) int ->
    ``(logsumexp(logits), logits[targets])``, two (N,) fp32 arrays, where
    ``logits = x @ kernel.T + bias`` (fp32); cross-entropy is their difference.

    Why by hand (each is a pass over the (N, V) logits, the largest array of the step, that
    XLA:CPU ran slowly): the logsumexp reads the logits and the bias as they are
    (``cpu_ops.row_logsumexp``; XLA:CPU wrote ``logits + bias`` out as a fresh (N, V) array
    for its windowed reductions, ~115 ms of op time a step at 350M); the backward is one
    fused pass (``softmax * g_lse + onehot * g_picked``, the softmax from the saved
    logsumexp) where autodiff of logsumexp and of the gather made several (an extra softmax
    pass, a scatter into a zero-filled copy); and the gradient's transpose for the weight
    product goes through ``cpu_ops.transpose2d`` (the native kernel on a single CPU device),
    so that product is a plain (V, N) x (N, E) one (XLA folded the transpose into a slow
    Eigen dot, or copied it on one thread: ~130 ms). The bias-free LLaMA head passes zeros.
    """
    return _head_fwd(x, kernel, bias, targets)[0]


def _head_logits(x: jax.Array, kernel: jax.Array) -> jax.Array:
    logits = jnp.einsum("ne,ve->nv", x.astype(kernel.dtype), kernel,
                        preferred_element_type=jnp.float32)  # fmt: skip
    return ax.constrain(logits, (ax.BATCH, ax.ACT_VOCAB))  # (N, V) fp32, bias not added


def _head_fwd(x: jax.Array, kernel: jax.Array, bias: jax.Array, targets: jax.Array) -> Any:
    logits = _head_logits(x, kernel)  # (N, V)
    b = bias.astype(jnp.float32)
    lse = cpu_ops.row_logsumexp(logits, b)  # (N,)
    picked = jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0] + b[targets]  # (N,)
    return (lse, picked), (x, kernel, bias, targets, logits, lse)


def _head_bwd(res: Any, g: tuple[jax.Array, jax.Array]) -> tuple[Any, ...]:
    x, kernel, bias, targets, logits, lse = res
    g_lse, g_picked = g  # (N,) each
    vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 1)  # (N, V)
    onehot = vocab == targets[:, None].astype(jnp.int32)
    z = logits + bias.astype(jnp.float32)
    d = jnp.exp(z - lse[:, None]) * g_lse[:, None] + jnp.where(onehot, g_picked[:, None], 0.0)
    d = ax.constrain(d, (ax.BATCH, ax.ACT_VOCAB))  # (N, V) d loss / d logits
    dx = jnp.einsum("nv,ve->ne", d.astype(kernel.dtype), kernel,
                    preferred_element_type=jnp.float32)  # fmt: skip  # (N, E)
    d_t = cpu_ops.transpose2d(d)  # (V, N)
    dk = jnp.einsum("vn,ne->ve", d_t.astype(x.dtype), x,
                    preferred_element_type=jnp.float32)  # fmt: skip  # (V, E)
    db = jnp.sum(d, axis=0)  # (V,)
    return dx.astype(x.dtype), dk.astype(kernel.dtype), db.astype(bias.dtype), None


head_lse_picked.defvjp(_head_fwd, _head_bwd)


def loss_sums(
    params: transformer.Params, batch: Batch, config: CodeGenConfig, opts: StepOptions
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(objective sum, sums) for one (micro-)batch: the summed cross-entropy (+ z-loss)
    over counted targets, and ``{"ce", "z", "count"}`` sums for the metrics."""
    compute = transformer.cast_params(params, jnp.dtype(opts.compute_dtype))
    hidden, _ = transformer.forward(
        compute,
        batch["tokens"],
        config,
        positions=batch["positions"],
        segment_ids=batch["segment_ids"],
        prefix_mask=batch.get("prefix_mask"),
        attn_impl=opts.attn_impl,  # type: ignore[arg-type]
        remat=opts.remat,  # type: ignore[arg-type]
        return_hidden=True,
    )  # (B, T, E)
    # position t predicts token t + 1; the last position predicts nothing (weight 0). The
    # logits are not sliced to T - 1: a slice of (B, T, V) is a copy, and its gradient a pad
    # (another), both over the largest array of the step.
    tokens = batch["tokens"]
    targets = jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)  # (B, T)
    mask = target_mask(batch)  # (B, T - 1)
    mask = jnp.concatenate([mask, jnp.zeros_like(mask[:, :1])], axis=1).astype(jnp.float32)
    head = compute["lm_head"]
    bias = head["bias"] if "bias" in head else jnp.zeros(head["kernel"].shape[:1], jnp.float32)
    b, t, e = hidden.shape
    lse, picked = head_lse_picked(hidden.reshape(b * t, e), head["kernel"], bias,
                                  targets.reshape(b * t))  # fmt: skip
    lse, picked = lse.reshape(b, t), picked.reshape(b, t)  # (B, T) each
    ce = jnp.sum((lse - picked) * mask)
    z = jnp.sum(jnp.square(lse) * mask)
    objective = ce + opts.z_loss * z if opts.z_loss else ce
    return objective, {"ce": ce, "z": z, "count": jnp.sum(mask)}


def _split_micro(batch: Batch, m: int) -> dict[str, jax.Array]:
    """(B, T) -> (m, B / m, T): micro-batch i takes rows i, i + m, i + 2m, ... so that each
    device's contiguous block of the batch holds an equal share of every micro-batch."""
    out = {}
    for key, x in batch.items():
        b = x.shape[0]
        if b % m:
            raise ValueError(f"batch of {b} rows does not split into {m} micro-batches")
        y = x.reshape(b // m, m, *x.shape[1:]).swapaxes(0, 1)  # (m, B / m, T)
        out[key] = ax.constrain(y, (None, ax.BATCH, ax.LENGTH))
    return out


def grads_and_sums(
    params: transformer.Params,
    batch: Batch,
    config: CodeGenConfig,
    opts: StepOptions,
    *,
    scale: jax.Array | None = None,
) -> tuple[Any, dict[str, jax.Array]]:
    """Gradient of the *summed* objective (times ``scale`` if given: the objective is scaled
    before differentiating, so no extra pass over the gradients) and the unscaled sums, over
    all micro-batches."""

    def objective(p: Any, b: Batch, c: CodeGenConfig, o: StepOptions) -> Any:
        obj, sums = loss_sums(p, b, c, o)
        return (obj if scale is None else obj * scale), sums

    grad_fn = jax.grad(objective, has_aux=True)
    if opts.micro_batches == 1:
        return grad_fn(params, batch, config, opts)
    micro = _split_micro(batch, opts.micro_batches)

    def body(carry: Any, mb: dict[str, jax.Array]) -> tuple[Any, None]:
        g_acc, s_acc = carry
        g, s = grad_fn(params, mb, config, opts)
        return (jax.tree.map(jnp.add, g_acc, g), jax.tree.map(jnp.add, s_acc, s)), None

    zeros_g = jax.tree.map(jnp.zeros_like, params)
    zeros_s = {k: jnp.zeros((), jnp.float32) for k in ("ce", "z", "count")}
    (grads, sums), _ = jax.lax.scan(body, (zeros_g, zeros_s), micro)
    return grads, sums


def train_step(
    state: State,
    batch: Batch,
    *,
    config: CodeGenConfig,
    optimizer: optax.GradientTransformation,
    schedule: Callable[[Any], Any],
    opts: StepOptions,
) -> tuple[State, dict[str, jax.Array]]:
    """One optimizer step. A non-finite loss or gradient leaves params and optimizer state
    unchanged (``metrics["finite"]`` is False); the loop then stops or goes on by policy."""
    # the gradient of the mean: the objective is scaled by 1 / count before differentiating
    # (the count depends on the batch only), not the gradients divided after (a whole pass
    # over them that XLA:CPU materialises, its consumers being the norm and the optimizer)
    count = jnp.maximum(jnp.sum(target_mask(batch).astype(jnp.float32)), 1.0)
    grads, sums = grads_and_sums(state["params"], batch, config, opts, scale=1.0 / count)
    loss = sums["ce"] / count
    grad_norm = optim.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # an optimizer taking extra arguments (``optim.make_optimizer``'s chain) gets the norm,
    # so that its clip does not read all the gradients a second time to compute it again
    extra = {"grad_norm": grad_norm} if isinstance(
        optimizer, optax.GradientTransformationExtraArgs) else {}  # fmt: skip

    def update(params: Any, opt_state: Any) -> tuple[Any, Any]:
        updates, new_opt = optimizer.update(grads, opt_state, params, **extra)
        return optax.apply_updates(params, updates), new_opt

    # A conditional, not a select of new and old: selecting makes XLA keep (copy) the old
    # params and moments next to the new ones, three extra passes over the whole state.
    new_params, new_opt = jax.lax.cond(
        finite, update, lambda p, o: (p, o), state["params"], state["opt_state"]
    )
    new_state = {"params": new_params, "opt_state": new_opt, "step": state["step"] + 1}
    metrics = {
        "loss": loss,
        "z_loss": sums["z"] / count,
        "grad_norm": grad_norm,
        "lr": jnp.asarray(schedule(state["step"]), jnp.float32),
        "tokens": sums["count"],
        "finite": finite,
    }
    return new_state, metrics


def eval_step(
    params: transformer.Params,
    batch: Batch,
    token_bytes: jax.Array,
    *,
    config: CodeGenConfig,
    opts: StepOptions,
) -> dict[str, jax.Array]:
    """Summed held-out cross-entropy, target count and target bytes (for bits per byte)."""
    _, sums = loss_sums(params, batch, config, opts)
    mask = target_mask(batch)
    nbytes = jnp.sum(jnp.where(mask, token_bytes[batch["tokens"][:, 1:]], 0))
    return {"ce": sums["ce"], "count": sums["count"], "bytes": nbytes.astype(jnp.float32)}


# ---- sharded state ------------------------------------------------------------------------
def state_shardings(
    config: CodeGenConfig, optimizer: optax.GradientTransformation, mesh: Mesh
) -> State:
    """NamedShardings of the state: params by the rules table, optimizer moments like the
    params they mirror, scalars (counts, step) replicated."""
    param_sh = ax.param_shardings(transformer.param_axes(config, stacked=True), mesh)
    abstract_params = jax.eval_shape(
        lambda: transformer.init_unjitted(config, jax.random.key(0), stacked=True)
    )
    abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_sh = optax.tree_map_params(
        optimizer,
        lambda _, sh: sh,
        abstract_opt,
        param_sh,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, NamedSharding),
    )
    return {"params": param_sh, "opt_state": opt_sh, "step": replicated}


def abstract_state(
    config: CodeGenConfig, optimizer: optax.GradientTransformation, mesh: Mesh
) -> State:
    """ShapeDtypeStructs with shardings for the whole state (what a restore needs)."""
    shardings = state_shardings(config, optimizer, mesh)

    def build() -> State:
        params = transformer.init_unjitted(config, jax.random.key(0), stacked=True)
        return {"params": params, "opt_state": optimizer.init(params),
                "step": jnp.zeros((), jnp.int32)}  # fmt: skip

    shapes = jax.eval_shape(build)
    return jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )


def init_state(
    config: CodeGenConfig,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    *,
    seed: int = 0,
    params: transformer.Params | None = None,
) -> State:
    """A fresh state placed on ``mesh``: random params (``seed``) or the given ones."""
    shardings = state_shardings(config, optimizer, mesh)

    def build(p: transformer.Params | None) -> State:
        if p is None:
            p = transformer.init_unjitted(config, jax.random.key(seed), stacked=True)
        p = jax.tree.map(lambda x: x.astype(jnp.float32), p)
        return {"params": p, "opt_state": optimizer.init(p), "step": jnp.zeros((), jnp.int32)}

    if params is not None:
        params = transformer.stack_layers(params)
    with ax.axis_rules(mesh):
        return jax.jit(build, out_shardings=shardings)(params)


# XLA:CPU (jaxlib 0.10) hands reductions to YNNPACK too, whose sums over the leading axis
# (the gradients of biases and norm scales: sums over the tokens) are ~25x slower than XLA's
# own loops (a 512 x 51200 column sum, the lm_head bias gradient: 315 ms vs 13 ms). The
# train and eval steps keep YNNPACK for the dots only.
_CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"
}


@functools.cache
def compiler_options(platform: str) -> dict[str, str] | None:
    """The XLA options the steps compile with on ``platform`` (None: the defaults; also
    on a CPU whose XLA does not know the option)."""
    if platform != "cpu":
        return None
    try:
        probe = jax.jit(lambda x: x.sum(0), compiler_options=_CPU_COMPILER_OPTIONS)
        probe.lower(jnp.ones((2, 2), jnp.float32)).compile()
    except (ValueError, RuntimeError):  # XlaRuntimeError: INVALID_ARGUMENT (unknown option)
        return None
    return dict(_CPU_COMPILER_OPTIONS)


def _platform(mesh: Mesh) -> str:
    return str(mesh.devices.flat[0].platform)


def compile_train_step(
    config: CodeGenConfig,
    optimizer: optax.GradientTransformation,
    schedule: Callable[[Any], Any],
    opts: StepOptions,
    mesh: Mesh,
) -> Callable[[State, Batch], tuple[State, dict[str, jax.Array]]]:
    """``step(state, batch) -> (state, metrics)`` jitted with the state's shardings (the
    state argument is donated). Call it inside ``axes.axis_rules(mesh)``."""
    sh = state_shardings(config, optimizer, mesh)

    def fn(state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
        return train_step(state, batch, config=config, optimizer=optimizer, schedule=schedule,
                          opts=opts)  # fmt: skip

    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(fn, in_shardings=(sh, None), out_shardings=(sh, replicated), donate_argnums=0,
                   compiler_options=compiler_options(_platform(mesh)))  # fmt: skip


def compile_eval_step(
    config: CodeGenConfig, opts: StepOptions, mesh: Mesh
) -> Callable[[transformer.Params, Batch, jax.Array], dict[str, jax.Array]]:
    replicated = NamedSharding(mesh, PartitionSpec())

    def fn(params: transformer.Params, batch: Batch, token_bytes: jax.Array) -> Any:
        return eval_step(params, batch, token_bytes, config=config, opts=opts)

    return jax.jit(fn, out_shardings=replicated, compiler_options=compiler_options(_platform(mesh)))
