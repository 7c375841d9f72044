"""Type stubs of the native extension ``codegen_core._core`` (bindings/). Use the Python
wrappers (``codegen_core.Tokenizer``, ...) instead of this module directly."""

from collections.abc import Sequence

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
    def encode(
        self,
        text: str,
        allowed_special: list[int] | None = ...,  # default [] (none); None = all
        disallowed_special: list[int] | None = None,  # None = every special not allowed
    ) -> list[int]: ...
    def encode_numpy(
        self,
        text: str,
        allowed_special: list[int] | None = ...,
        disallowed_special: list[int] | None = None,
    ) -> npt.NDArray[np.uint32]: ...
    def encode_reference(
        self,
        text: str,
        allowed_special: list[int] | None = ...,
        disallowed_special: list[int] | None = None,
    ) -> list[int]: ...  # the plain path (reference scanner, uncached BPE): for tests
    def pre_tokenize_reference(self, text: str) -> list[tuple[int, int]]: ...
    def encode_batch(
        self,
        texts: list[str],
        allowed_special: list[int] | None = ...,
        disallowed_special: list[int] | None = None,
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

# ---- near-duplicate detection (bindings/dedup.cpp) -------------------------------------
def minhash_params(
    num_perm: int, seed: int
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]: ...
def shingle_set(doc: str | bytes, ngram: int) -> npt.NDArray[np.uint32]: ...
def minhash_signatures(
    docs: Sequence[str | bytes],
    num_perm: int,
    seed: int,
    ngram: int,
    num_threads: int,
    scheme: str = "permutations",
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32]]: ...
def lsh_optimal_params(
    threshold: float, num_perm: int, fp_weight: float, fn_weight: float
) -> tuple[int, int]: ...
def lsh_error_areas(threshold: float, bands: int, rows: int) -> tuple[float, float]: ...
def band_keys(
    signatures: npt.NDArray[np.uint32], bands: int, rows: int, num_threads: int
) -> npt.NDArray[np.uint64]: ...
def candidate_pairs(
    band_keys: npt.NDArray[np.uint64],
    skip: npt.NDArray[np.uint8] | None,
    max_bucket: int,
    num_threads: int,
) -> npt.NDArray[np.uint32]: ...
def signature_similarity(
    signatures: npt.NDArray[np.uint32], pairs: npt.NDArray[np.uint32], num_threads: int
) -> npt.NDArray[np.float64]: ...
def exact_jaccard(
    docs: Sequence[str | bytes], pairs: npt.NDArray[np.uint32], ngram: int, num_threads: int
) -> npt.NDArray[np.float64]: ...
def cluster_roots(
    n: int, pairs: npt.NDArray[np.uint32], keep: npt.NDArray[np.uint8] | None
) -> npt.NDArray[np.uint32]: ...

# ---- file filters (csrc/data/filters.h) ----
# CodeGen's file filters and the exact-dedup content hash, in batches.
def filter_reason_names() -> list[str]: ...  # code -> reason name ("" = keep)
def filter_documents(
    docs: Sequence[str | bytes],
    max_file_bytes: int,
    max_mean_line_length: float,
    max_line_length: float,
    max_digit_fraction: float,
    num_threads: int,
) -> tuple[bytes, bytes]: ...  # (reason codes [n], 16-byte BLAKE2b digests [16 n])
def read_filter_files(
    paths: Sequence[str | bytes],
    max_file_bytes: int,
    max_mean_line_length: float,
    max_line_length: float,
    max_digit_fraction: float,
    num_threads: int,
    as_text: bool,
) -> tuple[bytes, bytes, list[str | bytes | None]]: ...  # (codes, digests, contents)
def walk_files(
    root: str | bytes, prefix: str | bytes, exclude_dirs: Sequence[str | bytes]
) -> list[str] | None: ...  # sorted os.walk order; None: a name is not UTF-8

# ---- CPU kernels (XLA FFI) ----------------------------------------------------------------
def xla_ffi_targets() -> dict[str, object]: ...  # name -> PyCapsule of the handler
def dense_uses_avx2() -> bool: ...
def reduce_uses_avx2() -> bool: ...  # sum_squares / transpose kernels
def stream_read(
    buffer: np.ndarray, num_threads: int = 0, reps: int = 5
) -> tuple[int, list[float]]: ...  # (checksum, seconds per read pass)
