"""The native fast path (SIMD pre-tokenizer, packed piece table, added-token skip) gives the
same pieces and ids as the plain path kept beside it (``pre_tokenize_reference``,
``encode_reference``: the byte-by-byte scanner and uncached BPE)."""

from __future__ import annotations

import itertools
import os
import random
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codegen_core.tokenizer.core import Tokenizer

from ..conftest import shared_path

MAX_EXAMPLES = int(os.environ.get("CODEGEN_MAX_EXAMPLES", "300"))


def _load(name: str) -> Tokenizer:
    if name == "codegen2":
        return Tokenizer.codegen2()
    return Tokenizer.from_file(shared_path("tokenizers", name, "tokenizer.json"))


@pytest.fixture(scope="module", params=["gpt2", "codegen", "codegen2"])
def tok(request: pytest.FixtureRequest) -> Tokenizer:
    return _load(request.param)


# Characters of every class the scanner distinguishes, ASCII and not: letters, digits,
# other, ASCII whitespace, non-ASCII letters/digits/other/whitespace, quotes for the
# contractions, and the bytes CodeGen's added tokens start with.
ALPHABET = "aZ7_{'s \t\n\r" + "é中٣€\u00a0\u3000\U0001f600"


def _tricky_texts() -> list[str]:
    texts = []
    # Runs of one class of every length around the 16-byte SIMD block, with another
    # character (ASCII or not) after them, at every offset into a block.
    for c, after in itertools.product("a7{ \n", ["", "x", "é", " ", "\u00a0", "'", "9", "\n"]):
        for n in [*range(1, 36), *range(44, 80, 3), 130]:
            for lead in ("", "q", "  ", "é", "ab = cd(e, f) + 12 " * (n % 4)):
                texts.append(lead + c * n + after)
    # Contractions and quotes at block edges (16-byte blocks, and the 64-byte blocks whose
    # piece starts come from bit masks: a contraction's end may fall in the next block, a
    # non-ASCII character near an edge sends the blocks around it to the byte scanner).
    for n in [*range(20), *range(56, 72), *range(120, 136)]:
        for tail in ("'s", "'ll", "'re", "'x", "'", " 's", " 'll", "\n'd", "'t'sx", "é'sa", "'vé"):
            texts.append("a" * n + tail + " b")
            texts.append("7" * n + tail + "\n\n")
    return texts


def test_pre_tokenizer_matches_reference_on_block_edges(tok: Tokenizer) -> None:
    core = tok._core
    for text in _tricky_texts():
        assert core.pre_tokenize(text) == core.pre_tokenize_reference(text), repr(text)


def test_encode_matches_reference_on_block_edges(tok: Tokenizer) -> None:
    core = tok._core
    for text in _tricky_texts()[::7]:
        assert core.encode(text, [], []) == core.encode_reference(text, [], []), repr(text)


@given(text=st.text(alphabet=st.sampled_from(ALPHABET), max_size=80) | st.text(max_size=40))
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_hypothesis_fast_equals_reference(tok: Tokenizer, text: str) -> None:
    core = tok._core
    assert core.pre_tokenize(text) == core.pre_tokenize_reference(text)
    assert core.encode(text, None, []) == core.encode_reference(text, None, [])


def test_stdlib_sample_fast_equals_reference(tok: Tokenizer, stdlib_texts) -> None:
    core = tok._core
    for name, text in stdlib_texts[::25]:
        assert core.encode(text, None, []) == core.encode_reference(text, None, []), name
        assert core.encode_numpy(text, None, []).tolist() == core.encode(text, None, []), name


@pytest.mark.slow
def test_every_stdlib_file_fast_equals_reference(tok: Tokenizer, stdlib_texts) -> None:
    core = tok._core
    bad = [
        n for n, t in stdlib_texts if core.encode(t, None, []) != core.encode_reference(t, None, [])
    ]
    assert not bad, f"{len(bad)} files differ, e.g. {bad[:5]}"


def _long_letter_runs() -> list[str]:
    rnd = random.Random(15)
    texts = []
    for alphabet in (string.ascii_letters, "qQzZxXjJkK", "abcdeé中ßж", "aaaaaaaaaaaaaaaaaaaaqZ"):
        for n in (17, 18, 31, 33, 64, 257, 3000):
            texts.append("".join(rnd.choice(alphabet) for _ in range(n)))
    # Parts longer than 16 bytes between the cuts, and cuts at the first and last byte.
    texts += ["qZ" + "a" * 40 + "qZ" + "b" * 17 + "Xq", "Zq" * 20, "a" * 300 + "qZ"]
    return texts


@given(text=st.text(alphabet=st.sampled_from("aeqxzQXZéж中"), min_size=17, max_size=120))
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_hypothesis_long_pieces_equal_reference(tok: Tokenizer, text: str) -> None:
    """Pieces over 16 bytes are cut where no token holds the two bytes around the cut; the
    ids are those of plain BPE over the whole piece."""
    core = tok._core
    assert core.encode(text, [], []) == core.encode_reference(text, [], [])


def test_long_letter_runs_equal_reference(tok: Tokenizer) -> None:
    core = tok._core
    for text in _long_letter_runs():
        for t in (text, " " + text, text + "7 " + text):
            assert core.encode(t, [], []) == core.encode_reference(t, [], []), repr(t[:60])


def test_piece_cache_refills_give_the_same_ids() -> None:
    """Many distinct short pieces overflow a thread's piece table (it is then reset to the
    whole tokens); ids before and after stay those of the reference."""
    tok = _load("gpt2")
    core = tok._core
    words = ["".join(w) + "q" for w in itertools.product("bcdfgkmpvxz", repeat=5)]
    text = " ".join(words)  # 161051 distinct 7-byte pieces, most not whole tokens
    for _ in range(2):
        assert core.encode(text, [], []) == core.encode_reference(text, [], [])


def test_added_tokens_at_block_edges_match_hf() -> None:
    """CodeGen's whitespace tokens and <|endoftext|> at every offset of the 16-byte blocks
    the added-token scan tests at once, against HF (the reference path shares the scan)."""
    hf_tokenizers = pytest.importorskip("tokenizers", reason="HF tokenizers is the peer")
    path = shared_path("tokenizers", "codegen", "tokenizer.json")
    ours, hf = Tokenizer.from_file(path), hf_tokenizers.Tokenizer.from_file(str(path))
    for lead, token, tail in itertools.product(
        range(40), ["  ", " " * 5, "\t\t", " \t ", "<|endoftext|>", "<|", " <"], ["x", "", " y"]
    ):
        text = "a" * lead + token + tail + " z" * (lead % 5)
        assert ours.encode(text, allowed_special="all") == hf.encode(text).ids, repr(text)


def test_encode_numpy_is_encode_as_uint32() -> None:
    tok = _load("codegen2")
    text = "def f(x):\n    return x  # <mask_1> <|endoftext|>\n"
    arr = tok.encode_numpy(text, disallowed_special=())
    assert arr.dtype.name == "uint32" and arr.tolist() == tok.encode_ordinary(text)
    assert tok.encode_numpy("<|endoftext|>", allowed_special="all").tolist() == [50256]
    with pytest.raises(ValueError, match="disallowed"):
        tok.encode_numpy("<|endoftext|>")
    with pytest.raises(ValueError, match="lone surrogate"):
        tok.encode_numpy("a\ud800")
