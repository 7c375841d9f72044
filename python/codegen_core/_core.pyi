"""Type stubs of the native extension ``codegen_core._core`` (bindings/). Use the Python
wrappers (``codegen_core.Tokenizer``, ...) instead of this module directly."""

import numpy as np
import numpy.typing as npt

class BPETokenizer:
    def __init__(
        self,
        vocab: list[tuple[str, int]],
        merges: list[tuple[str, str]],
        added_tokens: list[tuple[str, int, bool, bool, bool, bool]],
        add_prefix_space: bool = False,
        use_regex: bool = True,
        ignore_merges: bool = False,
    ) -> None: ...
    def encode(self, text: str, allowed_special: list[int] | None = None) -> list[int]: ...
    def encode_batch(
        self,
        texts: list[str],
        allowed_special: list[int] | None = None,
        num_threads: int = 0,
        flat: bool = False,
    ) -> list[list[int]] | tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]: ...
    def decode_bytes(
        self,
        ids: list[int] | tuple[int, ...] | npt.NDArray[np.integer],
        skip_special_tokens: bool = False,
    ) -> bytes: ...
    def decode(
        self,
        ids: list[int] | tuple[int, ...] | npt.NDArray[np.integer],
        skip_special_tokens: bool = False,
    ) -> str: ...
    def pre_tokenize(self, text: str) -> list[tuple[int, int]]: ...
    def token_to_id(self, token: str) -> int | None: ...
    def id_to_token(self, id: int) -> str | None: ...
    def is_special(self, id: int) -> bool: ...
    @property
    def vocab_size(self) -> int: ...

def unicode_classes() -> npt.NDArray[np.uint8]: ...
