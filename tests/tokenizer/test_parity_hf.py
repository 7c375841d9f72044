"""Exact ids against HF `tokenizers` on the real CodeGen and GPT-2 tokenizer files."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codegen_core import Tokenizer, _core
from codegen_core._reference.bpe import bytes_to_unicode

from ..conftest import shared_path

hf_tokenizers = pytest.importorskip("tokenizers", reason="HF tokenizers is the reference peer")
MAX_EXAMPLES = int(os.environ.get("CODEGEN_MAX_EXAMPLES", "300"))
NAMES = ["codegen", "gpt2"]


@pytest.fixture(scope="module", params=NAMES)
def pair(request: pytest.FixtureRequest) -> tuple[Tokenizer, object]:
    path = shared_path("tokenizers", request.param, "tokenizer.json")
    return Tokenizer.from_file(path), hf_tokenizers.Tokenizer.from_file(str(path))


def test_every_stdlib_file(pair, stdlib_texts) -> None:
    ours, hf = pair
    texts = [t for _, t in stdlib_texts]
    expected = [e.ids for e in hf.encode_batch(texts)]
    got = ours.encode_batch(texts, allowed_special="all")  # HF makes special text control ids
    mismatched = [
        name for (name, _), a, b in zip(stdlib_texts, got, expected, strict=True) if a != b
    ]
    assert not mismatched, f"{len(mismatched)} files differ, e.g. {mismatched[:5]}"
    flat, offsets = ours.encode_batch_flat(texts, allowed_special="all")
    assert offsets[-1] == len(flat) == sum(len(e) for e in expected)
    assert flat[offsets[7] : offsets[8]].tolist() == expected[7]


def test_decode_round_trip_on_stdlib(pair, stdlib_texts) -> None:
    ours, hf = pair
    for _, text in stdlib_texts[::10]:
        ids = ours.encode(text, allowed_special="all")
        assert ours.decode(ids) == text
        assert hf.decode(ids, skip_special_tokens=False) == text


GOLDEN = {
    "codegen": {
        "    return": [50284, 7783],
        " " * 40: [50257, 50279],
        "\t\t\tx": [50293, 87],
        "hello world": [31373, 995],
        "def f(x):\n    return x + 1\n": [
            4299,
            277,
            7,
            87,
            2599,
            198,
            50284,
            7783,
            2124,
            1343,
            352,
            198,
        ],
        "<|endoftext|>": [50256],
    },
    "gpt2": {
        "hello world": [31373, 995],
        "    return": [220, 220, 220, 1441],
        "<|endoftext|>": [50256],
    },
}


@pytest.mark.parametrize("name", NAMES)
def test_golden_ids(name: str) -> None:
    tok = Tokenizer.from_file(shared_path("tokenizers", name, "tokenizer.json"))
    for text, ids in GOLDEN[name].items():
        assert tok.encode(text, allowed_special="all") == ids, text


# Text that stresses the pre-tokenizer: whitespace runs of every kind, CRLF, digits, emoji,
# combining marks, contractions, added-token look-alikes, scripts with unusual categories.
FRAGMENTS = [
    " ", "  ", "    ", " " * 33, "\t", "\t\t\t", "\n", "\r\n", "\n\n\n", "\u00a0", "\u2000", "\u3000",
    "\u0085", "\x0b", "\x0c", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "''", "x", "Zz",
    "0", "123", "١٢", "Ⅻ", "½", "é", "e\u0301", "\u0301", "😀", "👩‍💻", "🇫🇷", "中文", "ᏸ",
    "ℌ", "{", "}}", "!=", "->", "::", "#", "__init__", "<|endoftext|>", "<|endoftext", "\x00",
    "\ufeff", "\u200b", "\U0001d7d8", "\U000e0041",
]  # fmt: skip
text_strategy = st.one_of(
    st.text(),
    st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=3), max_size=40).map("".join),
)


@given(text=text_strategy)
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_hypothesis_matches_hf(pair, text: str) -> None:
    ours, hf = pair
    ids = ours.encode(text, allowed_special="all")
    assert ids == hf.encode(text).ids
    assert ours.decode(ids) == text


def _hf_ordinary(hf: object) -> object:
    """A copy of an HF tokenizer that encodes special-token text as text."""
    plain = hf_tokenizers.Tokenizer.from_str(hf.to_str())  # type: ignore[attr-defined]
    plain.encode_special_tokens = True
    return plain


@given(text=text_strategy)
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_hypothesis_ordinary_matches_hf_encode_special_tokens(pair, text: str) -> None:
    """encode_ordinary is HF with ``encode_special_tokens = True``; whitespace tokens stay."""
    ours, hf = pair
    plain = _CACHE.setdefault(f"ordinary:{id(hf)}", (ours, _hf_ordinary(hf)))[1]
    ids = ours.encode_ordinary(text)
    assert ids == plain.encode(text).ids  # type: ignore[attr-defined]
    assert ours.encode(text, disallowed_special=()) == ids
    assert ours.decode(ids) == text


@given(ids=st.lists(st.integers(0, 50294), max_size=30))
@settings(max_examples=MAX_EXAMPLES, deadline=None)
def test_decode_invalid_utf8_like_hf(ids: list[int]) -> None:
    path = shared_path("tokenizers", "codegen", "tokenizer.json")
    ours = _decode_pair(str(path))
    assert ours[0].decode(ids) == ours[1].decode(ids, skip_special_tokens=False)
    assert ours[0].decode(ids, skip_special_tokens=True) == ours[1].decode(
        ids, skip_special_tokens=True
    )


_CACHE: dict[str, tuple[Tokenizer, object]] = {}


def _decode_pair(path: str) -> tuple[Tokenizer, object]:
    if path not in _CACHE:
        _CACHE[path] = (Tokenizer.from_file(path), hf_tokenizers.Tokenizer.from_file(path))
    return _CACHE[path]


def test_lone_surrogates_refused_like_hf(pair) -> None:
    ours, hf = pair
    for text in ["a\ud800b", "\udfff", "ok \udc80"]:
        with pytest.raises(TypeError):
            hf.encode(text)
        with pytest.raises(ValueError, match="lone surrogate"):
            ours.encode(text)
        with pytest.raises(ValueError, match=r"texts\[1\].*lone surrogate"):
            ours.encode_batch(["fine", text])


def _check_code_points(cps: list[int]) -> None:
    pre = hf_tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok = Tokenizer.from_file(shared_path("tokenizers", "gpt2", "tokenizer.json"))
    for start in range(0, len(cps), 8192):
        chunk = [chr(cp) for cp in cps[start : start + 8192]]
        # Each character after a letter, a digit, punctuation and a space.
        text = "".join(f"a{c}1{c}!{c} {c}" for c in chunk)
        expected = [piece for piece, _ in pre.pre_tokenize_str(text)]
        got = [_byte_level(p) for p in tok.pre_tokenize(text)]
        if got != expected:
            bad = next(i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b)
            pytest.fail(
                f"pre-tokenization differs near {got[bad - 2 : bad + 2]} vs {expected[bad - 2 : bad + 2]}"
            )


def test_code_points_pre_tokenize_like_hf() -> None:
    """The generated Unicode tables agree with HF's Oniguruma: the whole BMP, a sample above."""
    bmp = [cp for cp in range(0x10000) if not 0xD800 <= cp <= 0xDFFF]
    _check_code_points(bmp + list(range(0x10000, 0x110000, 17)))


@pytest.mark.slow
def test_every_code_point_pre_tokenizes_like_hf() -> None:
    """All of 0..0x10FFFF (about a minute)."""
    _check_code_points([cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF])


_BYTE_LEVEL = dict(bytes_to_unicode())


def _byte_level(piece: str) -> str:
    """A piece spelled over GPT-2's byte alphabet, as HF's pre_tokenize_str returns it."""
    return piece.encode("utf-8").decode("latin-1").translate(_BYTE_LEVEL)


def test_unicode_table_shape() -> None:
    classes = _core.unicode_classes()
    assert classes.shape == (0x110000,)
    assert classes[ord("a")] == 1 and classes[ord("7")] == 2 and classes[ord(" ")] == 3
    assert classes[0x1C89] == 1  # assigned in Unicode 16.0: HF's Oniguruma knows it


@pytest.mark.parametrize(
    "text",
    [
        "a" * 200_000,
        " " * 199_999 + "x",
        "\n" * 200_000,
        "7" * 200_000,
        "{" * 200_000,
        "ab" * 100_000,
        "\t" * 100_000 + "y",
    ],
    ids=["letter", "spaces+letter", "newlines", "digits", "braces", "ab", "tabs"],
)
def test_pathological_inputs_match_hf(pair, text: str) -> None:
    ours, hf = pair
    assert ours.encode(text) == hf.encode(text).ids


def test_random_letters_megabyte_matches_hf(pair) -> None:
    import random  # noqa: PLC0415
    import string  # noqa: PLC0415

    rnd = random.Random(1234)
    text = "".join(rnd.choice(string.ascii_letters) for _ in range(1_000_000))
    ours, hf = pair
    assert ours.encode(text) == hf.encode(text).ids
