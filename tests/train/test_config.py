"""The trainer config: presets (jaxformer's published recipes), validation, overrides."""

from __future__ import annotations

import json

import pytest

from codegen_core.model.config import get_preset
from codegen_core.train.config import (
    Config,
    ConfigError,
    load_config,
    parse_overrides,
    preset_names,
)
from tests.conftest import shared_path

# preset -> the jaxformer config it reproduces
JAXFORMER = {
    "codegen-350M": "codegen_350M_nl.json",
    "codegen-350M-multi": "codegen_350M_multi.json",
    "codegen-2B": "codegen_2B_nl.json",
    "codegen-6B": "codegen_6B_nl.json",
}


def test_every_preset_loads_and_resolves() -> None:
    names = preset_names()
    assert {"tiny", "codegen-350M", "codegen-2B", "codegen-6B", "codegen-16B"} <= set(names)
    for name in names:
        cfg = load_config(name)
        model = cfg.model.resolve()
        assert model.vocab_size == 51200, name  # the real tokenizers' ids fit
        assert cfg.data.seq_len is not None and cfg.data.seq_len <= model.n_ctx, name
        assert cfg.train.global_batch_size % cfg.train.micro_batches == 0, name


@pytest.mark.parametrize("preset", sorted(JAXFORMER))
def test_presets_match_the_published_jaxformer_configs(preset: str) -> None:
    jf = json.loads(shared_path("data", "jaxformer-configs", JAXFORMER[preset]).read_text())
    cfg = load_config(preset)
    model = cfg.model.resolve()
    assert model.n_layer == jf["model_layers"]
    assert model.d_model == jf["model_dim"]
    assert model.n_head == jf["model_heads"]
    assert model.head_dim == jf["model_head_dim"]
    assert model.rotary_dim == jf["model_pe_rotary_dims"]
    assert model.vocab_size == jf["model_vocab_size"]
    assert cfg.data.seq_len == jf["model_seq_len"]
    o = cfg.optim
    assert o.lr == jf["opt_lr_max"]
    assert o.end_lr == jf["opt_lr_end"]
    assert o.warmup_steps == jf["opt_warmup_steps"]
    assert o.decay_steps == jf["opt_anneal_steps"]
    assert cfg.train.steps == jf["opt_total_steps"]
    assert o.weight_decay == jf["opt_weight_decay"]
    assert o.clip_norm == jf["opt_clip_by_global_norm"]
    assert (o.b1, o.b2, o.eps) == (0.9, 0.999, 1e-8)
    # jaxformer: 8 cores per host, each host feeds per_replica_batch x accumulation sequences
    hosts = jf["tpu_size"] // 8
    assert (
        cfg.train.global_batch_size
        == hosts * jf["opt_per_replica_batch"] * (jf["opt_gradient_accumulation_steps"])
    )
    assert cfg.train.micro_batches == jf["opt_gradient_accumulation_steps"]
    assert cfg.checkpoint.every == jf["ckpt_every"]


def test_model_section_overrides_preset_fields() -> None:
    cfg = load_config("tiny", ["model.n_layer=3", "model.d_ff=300"])
    model = cfg.model.resolve()
    assert (model.n_layer, model.d_ff, model.d_model) == (3, 300, 128)
    assert model.n_ctx == get_preset("codegen-350M").replace(n_ctx=256).n_ctx


def test_overrides_parse_as_yaml_scalars() -> None:
    raw = parse_overrides(["optim.lr=1e-4", "optim.end_lr=null", "log.plot=false", "a.b.c=x"])
    assert raw == {"optim": {"lr": 1e-4, "end_lr": None}, "log": {"plot": False},
                   "a": {"b": {"c": "x"}}}  # fmt: skip
    cfg = load_config(None, ["optim.lr=2e-3", "train.steps=7", "objectives.prefix_lm=true"])
    assert cfg.optim.lr == 2e-3 and cfg.train.steps == 7 and cfg.objectives.prefix_lm
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0  # an int is a fine float


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.stepz=3", "unknown key train.stepz"),
        ("trian.steps=3", "unknown section 'trian'"),
        ("model.n_layers=2", "unknown key model.n_layers"),
        ("train.steps=3.5", "train.steps=3.5 must be of type int"),
        ("train.steps=yes", "train.steps=True must be of type int"),
        ("optim.lr=fast", "optim.lr='fast' must be of type float"),
        ("train.nan_policy=ignore", "train.nan_policy='ignore' must be one of stop, skip"),
        ("log.plot=1", "log.plot=1 must be of type bool"),
        ("train.micro_batches=3", "must divide train.global_batch_size=8"),
        ("mesh.data=0", "mesh.data=0"),
        ("model.n_head=5", "must be divisible by n_head=5"),
        ("train.steps", "not of the form section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert needle in str(err.value)


def test_bad_file_keys_name_the_key_and_the_file(tmp_path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  steps: 10\n  batch: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "train.batch" in str(err.value)
    path.write_text("optim:\n  lr: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: optim\.lr=\[1, 2\] must be of type float"):
        load_config(path)
    with pytest.raises(ConfigError, match="neither a file nor a preset"):
        load_config("no-such-preset")


def test_json_file_and_round_trip_through_yaml(tmp_path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"model": {"preset": "codegen-350M", "n_layer": 2},
                                "train": {"steps": 5}, "optim": {"lr": 0.001}}))  # fmt: skip
    cfg = load_config(path, ["run.dir=/tmp/x"])
    assert cfg.train.steps == 5 and cfg.model.resolve().n_layer == 2
    written = tmp_path / "config.yaml"
    written.write_text(cfg.to_yaml())
    assert load_config(written) == cfg
    assert Config() == load_config(None)


def test_attention_impl_has_one_source_and_the_old_train_key_maps_to_it(tmp_path) -> None:
    assert "attn_impl" not in Config().to_dict()["train"]
    cfg = load_config("tiny", ["model.attention_impl=xla"])
    assert cfg.model.resolve().attention_impl == "xla"
    # an old run's config.yaml (train.attn_impl) still loads: the value moves to the model
    old = tmp_path / "config.yaml"
    old.write_text("train:\n  attn_impl: xla\n", encoding="utf-8")
    cfg = load_config(old)
    assert cfg.model.resolve().attention_impl == "xla"
    assert "attn_impl" not in cfg.to_dict()["train"]
    assert load_config(old, ["model.attention_impl=xla"]).model.resolve().attention_impl == "xla"
    # "auto" deferred to the model: it leaves model.attention_impl as it is
    old.write_text("train:\n  attn_impl: auto\n", encoding="utf-8")
    assert load_config(old, ["model.attention_impl=xla"]).model.resolve().attention_impl == "xla"
    with pytest.raises(
        ConfigError, match=r"train\.attn_impl='xla'.*model\.attention_impl='pallas'"
    ):
        load_config("tiny", ["train.attn_impl=xla", "model.attention_impl=pallas"])
    with pytest.raises(ConfigError, match=r"train\.attn_impl='flash' must be one of"):
        load_config("tiny", ["train.attn_impl=flash"])
