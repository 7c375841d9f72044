"""Models by name: a local checkpoint directory, or a Hugging Face Hub id resolved through
``huggingface_hub`` (downloaded when online, taken from the local cache when offline).

``huggingface_hub`` is optional (it comes with transformers) and imported only when a name is
not a local directory. ``HF_HOME`` / ``HF_HUB_CACHE`` choose the cache, ``HF_HUB_OFFLINE=1``
forbids downloads, as everywhere in the Hugging Face tools.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["CHECKPOINT_FILES", "is_hub_id", "resolve_model_dir"]

#: What a checkpoint needs from a Hub repository (nothing else is downloaded).
CHECKPOINT_FILES = (
    "config.json",
    "tokenizer.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_hub_id(name: str) -> bool:
    """Whether ``name`` has the form of a Hub repository id (``owner/name`` or ``name``)."""
    return bool(_HUB_ID.match(name)) and ".." not in name and not name.endswith((".", "-"))


def resolve_model_dir(name_or_path: str | Path, *, revision: str | None = None) -> Path:
    """The local directory of a checkpoint given as a directory or a Hub id.

    An existing directory is returned as is. Otherwise ``name_or_path`` must look like a Hub
    id: its files (config, weights, tokenizer) are fetched with
    ``huggingface_hub.snapshot_download`` - from the cache when present or offline,
    downloaded otherwise. Errors name the input and the cache: ``FileNotFoundError`` when
    neither the cache nor the Hub has it, ``RuntimeError`` when ``huggingface_hub`` is not
    installed.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists():
        raise NotADirectoryError(f"model {name}: is a file; give a checkpoint directory")
    if not is_hub_id(name):
        raise FileNotFoundError(
            f"model directory {name} does not exist (and it is not a Hub id like owner/name)"
        )
    try:
        import huggingface_hub  # noqa: PLC0415 - optional; only for names
        from huggingface_hub import constants  # noqa: PLC0415
    except ImportError:
        raise RuntimeError(
            f"model {name!r} is not a local directory, and fetching it from the Hugging Face "
            "Hub needs the huggingface_hub package: pip install huggingface_hub"
        ) from None
    cache = constants.HF_HUB_CACHE
    try:
        local = huggingface_hub.snapshot_download(
            name, revision=revision, allow_patterns=list(CHECKPOINT_FILES)
        )
    except Exception as exc:  # noqa: BLE001 - every hub failure becomes one clear message
        if constants.HF_HUB_OFFLINE:
            how = "and HF_HUB_OFFLINE is set, so it was not downloaded"
        else:
            how = f"and it could not be downloaded ({type(exc).__name__}: {exc})"
        raise FileNotFoundError(
            f"model {name!r}: no such local directory, not in the Hugging Face cache {cache}, {how}"
        ) from None
    local_dir = Path(local)
    if not (local_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"model {name!r} ({local_dir}): the repository has no config.json; is it a "
            "transformers checkpoint?"
        )
    return local_dir
