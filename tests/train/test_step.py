"""The loss, the optimizer recipe and the train step on one CPU device (tiny shapes)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from codegen_core.model import axes as ax
from codegen_core.model import transformer
from codegen_core.model.config import CodeGenConfig
from codegen_core.train import optim
from codegen_core.train import step as step_lib
from codegen_core.train.config import OptimSection
from codegen_core.train.distributed import global_batch, make_mesh

MODEL = CodeGenConfig(name="t", vocab_size=64, n_layer=2, d_model=32, n_head=4, rotary_dim=4,
                      n_ctx=32, eos_token_id=0, bos_token_id=0)  # fmt: skip
B, T = 4, 16


def _batch(seed: int = 0, *, loss_mask: bool = False) -> dict[str, np.ndarray]:
    """Rows of two documents (boundary at 10), the first row padded from 13."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, MODEL.vocab_size, (B, T)).astype(np.int32)
    seg = np.ones((B, T), np.int32)
    seg[:, 10:] = 2
    seg[0, 13:] = 0
    pos = np.concatenate([np.arange(10), np.arange(T - 10)])[None].repeat(B, 0).astype(np.int32)
    out = {"tokens": tokens, "segment_ids": seg, "positions": pos}
    if loss_mask:
        out["loss_mask"] = rng.random((B, T)) < 0.6
    return out


def _setup(opt_cfg: OptimSection | None = None) -> tuple:
    cfg = opt_cfg or OptimSection(lr=1e-2, warmup_steps=0, decay_steps=100)
    optimizer = optim.make_optimizer(cfg, MODEL)
    mesh = make_mesh(-1, 1, 1)
    state = step_lib.init_state(MODEL, optimizer, mesh, seed=0)
    return optimizer, optim.schedule(cfg), mesh, state


def _reference_loss(params, batch: dict[str, np.ndarray]) -> tuple[float, float, float]:
    """Mean cross-entropy, count and mean lse^2 by hand: numpy over the model's logits."""
    logits, _ = transformer.forward(params, jnp.asarray(batch["tokens"]), MODEL,
                                    positions=jnp.asarray(batch["positions"]),
                                    segment_ids=jnp.asarray(batch["segment_ids"]))  # fmt: skip
    logits = np.asarray(logits, np.float64)
    ces, zs = [], []
    seg = batch["segment_ids"]
    for b in range(B):
        for t in range(T - 1):
            if seg[b, t] == 0 or seg[b, t + 1] != seg[b, t]:
                continue
            if "loss_mask" in batch and not batch["loss_mask"][b, t + 1]:
                continue
            row = logits[b, t]
            lse = np.log(np.sum(np.exp(row - row.max()))) + row.max()
            ces.append(lse - row[batch["tokens"][b, t + 1]])
            zs.append(lse**2)
    return float(np.mean(ces)), float(len(ces)), float(np.mean(zs))


@pytest.mark.parametrize("loss_mask", [False, True])
def test_loss_counts_exactly_the_targets_of_the_contract(loss_mask: bool) -> None:
    optimizer, schedule, mesh, state = _setup()
    batch = _batch(1, loss_mask=loss_mask)
    want, count, z = _reference_loss(state["params"], batch)
    if not loss_mask:
        # 4 rows x 15 transitions, minus the 4 document boundaries, minus row 0's padding
        assert count == 4 * 15 - 4 - 3
    opts = step_lib.StepOptions(z_loss=1e-3)
    fn = step_lib.compile_train_step(MODEL, optimizer, schedule, opts, mesh)
    with ax.axis_rules(mesh):
        _, m = fn(state, global_batch(batch, mesh))
    assert float(m["tokens"]) == count
    np.testing.assert_allclose(float(m["loss"]), want, rtol=1e-5)  # fp32 vs fp64 reference
    np.testing.assert_allclose(float(m["z_loss"]), z, rtol=1e-5)


def test_a_fixed_batch_is_memorised() -> None:
    optimizer, schedule, mesh, state = _setup()
    fn = step_lib.compile_train_step(MODEL, optimizer, schedule, step_lib.StepOptions(), mesh)
    batch = global_batch(_batch(2), mesh)
    losses = []
    with ax.axis_rules(mesh):
        for _ in range(60):
            state, m = fn(state, batch)
            losses.append(float(m["loss"]))
    assert losses[0] > 3.5  # about ln(64) = 4.16 at initialisation
    assert losses[-1] < 0.05, losses[-10:]
    assert int(state["step"]) == 60


def test_gradient_accumulation_gives_the_same_gradients() -> None:
    _, _, mesh, state = _setup()
    batch = global_batch(_batch(3, loss_mask=True), mesh)
    outs = []
    for micro in (1, 4):
        opts = step_lib.StepOptions(micro_batches=micro)
        fn = jax.jit(lambda p, b, o=opts: step_lib.grads_and_sums(p, b, MODEL, o))
        with ax.axis_rules(mesh):
            outs.append(jax.device_get(fn(state["params"], batch)))
    (g1, s1), (g4, s4) = outs
    # the same sums of the same terms in another order: fp32 rounding only
    assert s1["count"] == s4["count"]
    np.testing.assert_allclose(s4["ce"], s1["ce"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g4), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * np.abs(b).max())


def test_bf16_compute_keeps_fp32_master_weights() -> None:
    optimizer, schedule, mesh, state = _setup()
    opts = step_lib.StepOptions(compute_dtype="bfloat16", remat="full")
    fn = step_lib.compile_train_step(MODEL, optimizer, schedule, opts, mesh)
    with ax.axis_rules(mesh):
        new, m = fn(jax.tree.map(jnp.copy, state), global_batch(_batch(4), mesh))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(new["params"]))
    want, _, _ = _reference_loss(state["params"], _batch(4))
    np.testing.assert_allclose(float(m["loss"]), want, rtol=2e-2)  # bf16 matmuls


def test_non_finite_step_leaves_the_state_unchanged() -> None:
    optimizer, schedule, mesh, state = _setup()
    params = jax.tree.map(np.asarray, state["params"])
    params["lm_head"]["bias"] = params["lm_head"]["bias"].copy()
    params["lm_head"]["bias"][5] = np.nan
    state = step_lib.init_state(MODEL, optimizer, mesh, params=params)
    before = jax.tree.map(np.asarray, state)
    fn = step_lib.compile_train_step(MODEL, optimizer, schedule, step_lib.StepOptions(), mesh)
    with ax.axis_rules(mesh):
        new, m = fn(state, global_batch(_batch(5), mesh))
    assert not bool(m["finite"]) and not np.isfinite(float(m["loss"]))
    assert int(new["step"]) == 1
    for a, b in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(before["params"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
    for a, b in zip(jax.tree.leaves(new["opt_state"]), jax.tree.leaves(before["opt_state"]),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), b)


def test_schedule_warmup_cosine_then_constant() -> None:
    cfg = OptimSection(lr=1e-3, end_lr=None, warmup_steps=10, decay_steps=100)
    s = optim.schedule(cfg)
    np.testing.assert_allclose([float(s(i)) for i in (0, 5, 10)], [0.0, 5e-4, 1e-3], rtol=1e-6)
    np.testing.assert_allclose(float(s(60)), 1e-4 + 0.5 * 9e-4, rtol=1e-5)  # half-way cosine
    np.testing.assert_allclose([float(s(110)), float(s(5000))], [1e-4, 1e-4], rtol=1e-5)
    s2 = optim.schedule(OptimSection(lr=3e-4, end_lr=3e-5, warmup_steps=0, decay_steps=10))
    np.testing.assert_allclose([float(s2(0)), float(s2(10)), float(s2(11))],
                               [3e-4, 3e-5, 3e-5], rtol=1e-5)  # fmt: skip


def test_weight_decay_mask_is_matrices_only() -> None:
    mask = optim.decay_mask(MODEL)
    layer = mask["h"]
    assert mask["wte"]["embedding"] and mask["lm_head"]["kernel"]
    assert layer["attn"]["qkv"] and layer["attn"]["out"] and layer["mlp"]["fc_in"]["kernel"]
    assert not layer["ln_1"]["scale"] and not layer["mlp"]["fc_in"]["bias"]
    assert not mask["lm_head"]["bias"] and not mask["ln_f"]["scale"]
    assert not optim.decay_mask(MODEL, decay_embedding=False)["wte"]["embedding"]
    # decay only moves decayed leaves when the gradient is zero
    cfg = OptimSection(lr=0.1, warmup_steps=0, decay_steps=10, weight_decay=0.5)
    opt = optim.make_optimizer(cfg, MODEL)
    params = transformer.init(MODEL, jax.random.key(0), stacked=True)
    params = jax.tree.map(lambda x: x + 1.0, params)  # no zero biases
    update = jax.jit(lambda p: opt.update(jax.tree.map(jnp.zeros_like, p), opt.init(p), p)[0])
    moved = jax.tree.map(lambda u: bool(np.any(u != 0)), jax.device_get(update(params)))
    assert moved == mask


def test_optimizer_state_is_sharded_like_the_params() -> None:
    optimizer, _, mesh, state = _setup()
    sh = step_lib.state_shardings(MODEL, optimizer, mesh)
    adam = state["opt_state"][1][0]  # chain(clip, adamw(...)) -> ScaleByAdamState
    p_specs = jax.tree.map(lambda x: x.sharding.spec, state["params"])
    assert jax.tree.map(lambda x: x.sharding.spec, adam.mu) == p_specs
    abstract = step_lib.abstract_state(MODEL, optimizer, mesh)
    assert jax.tree.structure(abstract) == jax.tree.structure(state)
    assert jax.tree.structure(sh) == jax.tree.structure(state)


def test_head_cross_entropy_gradient_is_autodiffs() -> None:
    # the hand-written backward of the LM head + (logsumexp, picked logit) against autodiff of
    # the plain formula, with cotangents as the loss gives them (masked positions weigh 0,
    # z-loss on lse): gradients of the hidden states, the kernel and the bias
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((10, 6)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((11, 6)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(11), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 11, 10), jnp.int32)
    w = jnp.asarray(rng.random(10) < 0.7, jnp.float32)

    def loss(fn: object, args: tuple[jax.Array, ...]) -> jax.Array:
        lse, picked = fn(*args, targets)  # type: ignore[operator]
        return jnp.sum((lse - picked) * w) + 1e-2 * jnp.sum(jnp.square(lse) * w)

    def plain(x: jax.Array, k: jax.Array, b: jax.Array, t: jax.Array) -> Any:
        logits = x @ k.T + b
        return (jax.nn.logsumexp(logits, axis=-1),
                jnp.take_along_axis(logits, t[:, None], axis=-1)[:, 0])  # fmt: skip

    args = (x, kernel, bias)
    got = jax.value_and_grad(lambda a: loss(step_lib.head_lse_picked, a))(args)
    want = jax.value_and_grad(lambda a: loss(plain, a))(args)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    for g, gw in zip(got[1], want[1], strict=True):
        np.testing.assert_allclose(g, gw, rtol=1e-5, atol=1e-6)
    # masked positions: no gradient reaches their hidden states
    assert float(jnp.max(jnp.abs(got[1][0][w == 0]))) == 0.0


@pytest.mark.parametrize("arch", ["codegen", "llama"])
def test_loss_and_gradient_are_the_plain_formulas(arch: str) -> None:
    # the trainer's loss (the LM head fused with the cross-entropy, native kernels on one CPU
    # device) against the model's logits and optax's cross-entropy, value and gradient, for
    # the biased (CodeGen) and the bias-free (LLaMA) head
    config = MODEL if arch == "codegen" else MODEL.replace(arch="llama", rotary_dim=None)
    params = transformer.init(config, jax.random.key(3), stacked=True)
    batch = {k: jnp.asarray(v) for k, v in _batch(5).items()}
    opts = step_lib.StepOptions()

    def plain(p: transformer.Params) -> jax.Array:
        logits, _ = transformer.forward(p, batch["tokens"], config,
                                        positions=batch["positions"],
                                        segment_ids=batch["segment_ids"])  # fmt: skip
        ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], batch["tokens"][:, 1:])
        return jnp.sum(ce * step_lib.target_mask(batch))

    def ours(p: transformer.Params) -> jax.Array:
        return step_lib.loss_sums(p, batch, config, opts)[0]

    got, want = jax.value_and_grad(ours)(params), jax.value_and_grad(plain)(params)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    # gradients are O(1); fp32 sums in another order differ by ~1e-6
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got[1],
                 want[1])  # fmt: skip


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_clip_is_optax_clip_by_global_norm(scale: float) -> None:
    # below and above the clip threshold; with the norm passed in (as the step does) and not
    params = transformer.init(MODEL, jax.random.key(1), stacked=True)
    grads = jax.tree.map(lambda x: x * scale + scale, params)
    want, _ = optax.clip_by_global_norm(1.0).update(grads, optax.EmptyState())
    np.testing.assert_allclose(optim.global_norm(grads), optax.tree.norm(grads), rtol=1e-6)
    clip = optim.clip_by_global_norm(1.0)
    for extra in ({}, {"grad_norm": optim.global_norm(grads)}):
        got, state = clip.update(grads, clip.init(params), **extra)
        assert state == optax.EmptyState()
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-6), got, want)
