"""The trainer's configuration: one frozen dataclass tree, loaded from YAML/JSON, validated.

Sources, later ones winning: the defaults below, a preset or file (``--config``), then
``key=value`` overrides with dotted paths (``train.steps=100``, ``model.n_layer=2``), whose
values are parsed as YAML scalars (``true``, ``1e-4``, ``null``). An unknown key or a value of
the wrong type is a :class:`ConfigError` naming the key and where it came from.

The ``model`` section is a preset name plus any :class:`~codegen_core.model.config.CodeGenConfig`
field to override (``model: {preset: codegen-350M, n_layer: 2}``).
Presets live in ``presets/*.yaml`` beside this file and only hold what differs from here.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from codegen_core.model.config import CodeGenConfig, get_preset

PRESET_DIR = Path(__file__).resolve().parent / "presets"


class ConfigError(ValueError):
    """A bad configuration key or value; the message names the key and its source."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, but ``1e-4`` is a float (YAML 1.2), not the string "1e-4"."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


# ---- sections -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSection:
    preset: str = "codegen-350M"  # a model preset (model/config.py) the fields below override
    # CodeGenConfig fields to override, as (name, value) pairs (from ``model.<field>`` keys)
    overrides: tuple[tuple[str, Any], ...] = ()

    def resolve(self) -> CodeGenConfig:
        """The model's CodeGenConfig: the preset with the overrides applied."""
        return get_preset(self.preset).replace(**dict(self.overrides))


@dataclass(frozen=True)
class DataSection:
    dir: str | None = None  # a `codegen-core data prepare` output directory (required)
    heldout_dir: str | None = None  # the same for held-out evaluation (optional)
    seq_len: int | None = None  # expected manifest seq_len (None: the manifest's, <= n_ctx)


@dataclass(frozen=True)
class RunSection:
    dir: str | None = None  # run directory: config.yaml, metrics.jsonl, checkpoints/ (required)


@dataclass(frozen=True)
class TrainSection:
    steps: int = 1000  # optimizer steps in total (a resumed run continues up to this)
    global_batch_size: int = 8  # sequences per optimizer step, over all processes
    micro_batches: int = 1  # gradient accumulation: the global batch runs in this many parts
    seed: int = 0  # parameter init and data order
    compute_dtype: Literal["float32", "bfloat16"] = "float32"  # master weights are always fp32
    remat: Literal["none", "full", "dots"] = "none"  # rematerialisation of the scanned layers
    z_loss: float = 0.0  # coefficient of logsumexp(logits)**2 (PaLM uses 1e-4)
    nan_policy: Literal["stop", "skip"] = "stop"  # on a non-finite loss or gradient
    init_from: str | None = None  # a transformers checkpoint directory (or Hub id) to start from


@dataclass(frozen=True)
class OptimSection:
    lr: float = 3e-4  # peak learning rate
    end_lr: float | None = None  # final learning rate; None: 10% of lr (jaxformer)
    warmup_steps: int = 3000  # linear warm-up from 0
    decay_steps: int = 300000  # cosine decay after the warm-up, then constant end_lr
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.1  # decoupled (AdamW), on matrices only
    decay_embedding: bool = True  # jaxformer decays every matrix, the embedding included
    clip_norm: float = 1.0  # global-norm gradient clipping (0 disables)


@dataclass(frozen=True)
class MeshSection:
    data: int = -1  # -1: the devices the other axes leave
    fsdp: int = 1
    tensor: int = 1


@dataclass(frozen=True)
class CheckpointSection:
    every: int = 1000  # steps between checkpoints (one is always written at the end)
    keep: int = 3  # newest checkpoints kept
    async_save: bool = True


@dataclass(frozen=True)
class ObjectivesSection:
    span_corruption_ratio: float = 0.0  # fraction of records span-corrupted (CodeGen2: ~0.5)
    mean_span_length: float | None = None  # None: objectives.ObjectiveConfig's default
    max_spans: int | None = None  # None: objectives.ObjectiveConfig's default
    noise_density: float | None = None  # fraction of a piece masked out; None: the default
    prefix_lm: bool = False  # bidirectional attention over the corrupted input
    seed: int = 0


@dataclass(frozen=True)
class EvalSection:
    every: int = 0  # steps between held-out evaluations (0: at step 0 and at the end only)
    batches: int = 8  # held-out global batches per evaluation
    batch_size: int | None = None  # None: train.global_batch_size


@dataclass(frozen=True)
class DistSection:
    coordinator: str | None = None  # host:port of process 0 (jax.distributed)
    num_processes: int = 1
    process_id: int = 0


@dataclass(frozen=True)
class LogSection:
    progress: bool = True  # tqdm progress bar
    tensorboard: bool = True  # <run.dir>/tensorboard event file
    plot: bool = True  # <run.dir>/loss.png at the end (needs matplotlib)
    peak_tflops: float = 0.0  # per-device peak for MFU; 0: measured by a matmul probe


@dataclass(frozen=True)
class Config:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    run: RunSection = field(default_factory=RunSection)
    train: TrainSection = field(default_factory=TrainSection)
    optim: OptimSection = field(default_factory=OptimSection)
    mesh: MeshSection = field(default_factory=MeshSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    objectives: ObjectivesSection = field(default_factory=ObjectivesSection)
    eval: EvalSection = field(default_factory=EvalSection)
    dist: DistSection = field(default_factory=DistSection)
    log: LogSection = field(default_factory=LogSection)

    def __post_init__(self) -> None:
        _validate(self)

    def replace(self, **sections: Any) -> Config:
        return dataclasses.replace(self, **sections)

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (the YAML written to the run directory); loads back equal."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if isinstance(section, ModelSection):
                out[f.name] = {"preset": section.preset, **dict(section.overrides)}
            else:
                out[f.name] = dataclasses.asdict(section)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _validate(cfg: Config) -> None:
    t, o = cfg.train, cfg.optim
    checks = [
        (t.steps >= 0, "train.steps", t.steps, "must be >= 0"),
        (t.global_batch_size >= 1, "train.global_batch_size", t.global_batch_size, "must be >= 1"),
        (t.micro_batches >= 1, "train.micro_batches", t.micro_batches, "must be >= 1"),
        (t.global_batch_size % t.micro_batches == 0, "train.micro_batches", t.micro_batches,
         f"must divide train.global_batch_size={t.global_batch_size}"),
        (t.z_loss >= 0, "train.z_loss", t.z_loss, "must be >= 0"),
        (o.lr >= 0, "optim.lr", o.lr, "must be >= 0"),
        (o.end_lr is None or o.end_lr >= 0, "optim.end_lr", o.end_lr, "must be >= 0"),
        (o.warmup_steps >= 0, "optim.warmup_steps", o.warmup_steps, "must be >= 0"),
        (o.decay_steps >= 1, "optim.decay_steps", o.decay_steps, "must be >= 1"),
        (o.clip_norm >= 0, "optim.clip_norm", o.clip_norm, "must be >= 0"),
        (cfg.checkpoint.every >= 1, "checkpoint.every", cfg.checkpoint.every, "must be >= 1"),
        (cfg.checkpoint.keep >= 1, "checkpoint.keep", cfg.checkpoint.keep, "must be >= 1"),
        (cfg.eval.every >= 0, "eval.every", cfg.eval.every, "must be >= 0"),
        (cfg.eval.batches >= 1, "eval.batches", cfg.eval.batches, "must be >= 1"),
        (0.0 <= cfg.objectives.span_corruption_ratio <= 1.0, "objectives.span_corruption_ratio",
         cfg.objectives.span_corruption_ratio, "must be in [0, 1]"),
        (cfg.dist.num_processes >= 1, "dist.num_processes", cfg.dist.num_processes,
         "must be >= 1"),
        (0 <= cfg.dist.process_id < cfg.dist.num_processes, "dist.process_id",
         cfg.dist.process_id, f"must be in [0, dist.num_processes={cfg.dist.num_processes})"),
    ]  # fmt: skip
    for ok, key, value, why in checks:
        if not ok:
            raise ConfigError(f"{key}={value!r} {why}")
    for axis in ("data", "fsdp", "tensor"):
        n = getattr(cfg.mesh, axis)
        if n == 0 or n < -1:
            raise ConfigError(f"mesh.{axis}={n} must be a positive size or -1 (fill)")
    if [cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor].count(-1) > 1:
        raise ConfigError("at most one of mesh.data, mesh.fsdp, mesh.tensor may be -1")
    try:
        cfg.model.resolve()
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model: {e}") from e


# ---- loading ------------------------------------------------------------------------------
_MODEL_FIELDS = {f.name: f for f in dataclasses.fields(CodeGenConfig)}


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def read_config_file(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    """The raw mapping of a preset name or a YAML/JSON file, and its source's name."""
    path = Path(name_or_path)
    if not path.exists() and (PRESET_DIR / f"{name_or_path}.yaml").exists():
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"config {str(name_or_path)!r} is neither a file nor a preset "
            f"(presets: {', '.join(preset_names())})"
        )
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix == ".json" else _yaml(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot parse ({e})") from e
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    return raw, str(path)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["train.steps=10", "model.n_layer=2"]`` -> a nested dict (values as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        try:
            value = _yaml(text) if text.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: cannot parse the value ({e})") from e
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override")
            node = child
        node[leaf] = value
    return out


def load_config(
    config: str | Path | None = None,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> Config:
    """Defaults <- ``config`` (a preset name or YAML/JSON path) <- ``overrides``."""
    layers: list[tuple[Mapping[str, Any], str]] = []
    if config is not None:
        layers.append(read_config_file(config))
    if isinstance(overrides, Mapping):
        layers.append((overrides, "overrides"))
    elif overrides:
        layers.append((parse_overrides(overrides), "command line"))
    return build_config(layers)


def build_config(layers: Sequence[tuple[Mapping[str, Any], str]]) -> Config:
    """Apply raw mappings in order (each with a source name for errors) onto the defaults."""
    sections: dict[str, dict[str, Any]] = {f.name: {} for f in dataclasses.fields(Config)}
    for raw, source in layers:
        for name, body in raw.items():
            if name not in sections:
                raise ConfigError(
                    f"{source}: unknown section {name!r} (known: {', '.join(sections)})"
                )
            if body is None:
                continue
            if not isinstance(body, Mapping):
                raise ConfigError(f"{source}: section {name!r} must be a mapping, got {body!r}")
            for key, value in body.items():
                sections[name][key] = (value, source)
    _map_legacy_keys(sections)
    built: dict[str, Any] = {}
    hints = typing.get_type_hints(Config)
    for name, values in sections.items():
        if name == "model":
            built[name] = _model_section(values)
        else:
            built[name] = _section(hints[name], name, values)
    try:
        return Config(**built)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # pragma: no cover - _validate wraps these
        raise ConfigError(str(e)) from e


def _map_legacy_keys(sections: dict[str, dict[str, Any]]) -> None:
    """``train.attn_impl`` (written by earlier versions into every run's config.yaml) is now
    ``model.attention_impl``, the one switch the model and the trainer read: "auto" (which
    deferred to the model) is dropped, another value moves there; an explicit, different
    ``model.attention_impl`` next to it is an error."""
    legacy = sections["train"].pop("attn_impl", None)
    if legacy is None:
        return
    value, source = legacy
    _coerce(value, Literal["auto", "xla", "pallas"], "train.attn_impl", source)
    if value == "auto":
        return
    current = sections["model"].get("attention_impl")
    if current is not None and current[0] != value:
        raise ConfigError(
            f"{source}: train.attn_impl={value!r} (the old name of model.attention_impl) "
            f"conflicts with model.attention_impl={current[0]!r} ({current[1]}); keep only "
            f"model.attention_impl"
        )
    sections["model"]["attention_impl"] = (value, source)


def _section(cls: type, name: str, values: Mapping[str, tuple[Any, str]]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, (value, source) in values.items():
        if key not in hints:
            raise ConfigError(
                f"{source}: unknown key {name}.{key} (known: {', '.join(sorted(hints))})"
            )
        kwargs[key] = _coerce(value, hints[key], f"{name}.{key}", source)
    return cls(**kwargs)


def _model_section(values: Mapping[str, tuple[Any, str]]) -> ModelSection:
    preset = ModelSection.preset
    overrides = []
    hints = typing.get_type_hints(CodeGenConfig)
    for key, (value, source) in values.items():
        if key == "preset":
            preset = _coerce(value, str, "model.preset", source)
        elif key in ("name",) or key not in _MODEL_FIELDS:
            known = ", ".join(["preset", *sorted(k for k in _MODEL_FIELDS if k != "name")])
            raise ConfigError(f"{source}: unknown key model.{key} (known: {known})")
        else:
            overrides.append((key, _coerce(value, hints[key], f"model.{key}", source)))
    return ModelSection(preset=preset, overrides=tuple(overrides))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """``value`` checked against the annotation ``tp`` (ints pass as floats, nothing else
    converts: ``"3"`` for an int is an error, as is ``1.5``)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        raise ConfigError(
            f"{source}: {key}={value!r} must be one of {', '.join(map(str, choices))}"
        )
    ok = False
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        ok = isinstance(value, str)
        if isinstance(value, int | float) and not isinstance(value, bool) and key.endswith("dir"):
            value, ok = str(value), True  # a numeric directory name
    elif tp is Any:
        ok = True
    if ok:
        return value
    name = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"{source}: {key}={value!r} must be of type {name}")
