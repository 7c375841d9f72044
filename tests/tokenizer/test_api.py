"""The Python API of Tokenizer: presets, special-token control, batches, errors."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from codegen_core import Tokenizer, TokenizerFileError
from codegen_core.tokenizer.spec import find_gpt2_files

from ..conftest import shared_path


@pytest.fixture(scope="module")
def codegen() -> Tokenizer:
    return Tokenizer.codegen()


def test_presets_come_from_an_installed_package_without_network() -> None:
    vocab, merges = find_gpt2_files()
    assert vocab.is_file() and merges.is_file()


def test_codegen_preset_equals_the_shipped_codegen_file(codegen, stdlib_texts) -> None:
    from_file = Tokenizer.from_file(shared_path("tokenizers", "codegen", "tokenizer.json"))
    texts = [t for _, t in stdlib_texts[::3]]
    assert codegen.encode_batch(texts) == from_file.encode_batch(texts)
    assert codegen.vocab_size == from_file.vocab_size == 50295


def test_gpt2_preset_equals_the_shipped_gpt2_file(stdlib_texts) -> None:
    preset = Tokenizer.gpt2(shared_path("tokenizers", "gpt2"))
    from_file = Tokenizer.from_file(shared_path("tokenizers", "gpt2", "tokenizer.json"))
    texts = [t for _, t in stdlib_texts[::7]]
    assert preset.encode_batch(texts) == from_file.encode_batch(texts)


def test_codegen_whitespace_tokens(codegen) -> None:
    for n in range(2, 32):
        assert codegen.encode(" " * n) == [50257 + 31 - n]
    for n in range(2, 10):
        assert codegen.encode("\t" * n) == [50287 + 9 - n]
    assert codegen.encode(" " * 40) == [50257, 50279]
    assert codegen.encode("    return") == [50284, codegen.token_to_id("return")]


def test_codegen2_layout() -> None:
    tok = Tokenizer.codegen2()
    assert tok.vocab_size == 51200
    expected = {
        "<fim_prefix>": 50295, "<fim_middle>": 50296, "<fim_suffix>": 50297,
        "<dummy_0>": 50313, "<dummy_3>": 50316, "<sep>": 50317, "<eom>": 50318,
        "<mask_881>": 50319, "<mask_1>": 51199, "<|endoftext|>": 50256,
    }  # fmt: skip
    for token, id_ in expected.items():
        assert tok.token_to_id(token) == id_
        assert tok.id_to_token(id_) == token
    prompt = "def f():\n<mask_1>\n    return 1<|endoftext|><sep><mask_1>"
    ids = tok.encode(prompt, allowed_special="all")
    assert ids[-3:] == [50256, 50317, 51199]
    assert tok.decode(ids) == prompt
    assert "<mask_1>" not in tok.decode(ids, skip_special_tokens=True)
    plain = tok.encode_ordinary(prompt)
    assert plain[:3] == ids[:3] and tok.decode(plain) == prompt
    assert not set(plain) & set(tok.special_tokens.values())


def test_special_text_is_never_silently_a_control_token(codegen) -> None:
    """The default is tiktoken's: special-token text raises unless allowed or made text."""
    text = "a<|endoftext|>b"
    with pytest.raises(ValueError, match=r"'<\|endoftext\|>' \(id 50256\) at byte offset 1"):
        codegen.encode(text)
    with pytest.raises(ValueError, match=r"texts\[1\]: .*<\|endoftext\|>"):
        codegen.encode_batch(["fine", text])
    with pytest.raises(ValueError, match="disallowed"):
        codegen.encode_batch_flat([text])
    plain = codegen.encode_ordinary(text)
    assert 50256 not in plain and codegen.decode(plain) == text
    assert codegen.encode(text, disallowed_special=()) == plain
    assert codegen.encode(text, allowed_special="none", disallowed_special=()) == plain
    assert codegen.encode_ordinary_batch([text, "x"]) == [plain, [87]]
    assert codegen.encode(text, allowed_special="all") == [64, 50256, 65]
    assert codegen.encode(text, allowed_special={"<|endoftext|>"}) == [64, 50256, 65]
    assert codegen.encode_batch([text], allowed_special="all") == [[64, 50256, 65]]
    # whitespace runs are vocabulary, not control tokens: the same ids in every mode
    assert codegen.encode_ordinary("    x") == codegen.encode("    x") == [50284, 87]
    with pytest.raises(ValueError, match="not special"):
        codegen.encode(text, allowed_special={"<nope>"})
    with pytest.raises(ValueError, match="not special"):
        codegen.encode(text, disallowed_special={"    "})
    with pytest.raises(TypeError, match="allowed_special"):
        codegen.encode(text, allowed_special="<|endoftext|>")
    with pytest.raises(TypeError, match="disallowed_special"):
        codegen.encode(text, disallowed_special="none")


def test_disallowed_special_is_a_subset() -> None:
    tok = Tokenizer.codegen2()
    text = "<mask_1>x<sep>"
    # only <sep> raises; <mask_1> is neither allowed nor disallowed: text
    with pytest.raises(ValueError, match="'<sep>'"):
        tok.encode(text, disallowed_special={"<sep>"})
    ids = tok.encode(text, allowed_special={"<sep>"}, disallowed_special={"<sep>"})
    assert ids[-1] == 50317 and 51199 not in ids
    assert tok.encode(text, allowed_special={"<mask_1>"}, disallowed_special=())[0] == 51199
    with pytest.raises(ValueError, match="'<sep>'"):  # "all" = every special not allowed
        tok.encode(text, allowed_special={"<mask_1>"})


def test_decode_bytes_and_replacement(codegen) -> None:
    ids = codegen.encode("héllo 😀")
    assert codegen.decode_bytes(ids) == "héllo 😀".encode()
    emoji = codegen.encode("😀")
    assert len(emoji) > 1
    assert codegen.decode(emoji[:1]) == "\ufffd"
    first = codegen.decode_bytes(emoji[:1])
    assert "😀".encode().startswith(first) and 0 < len(first) < 4


def test_batch_apis(codegen) -> None:
    texts = ["def f():", "", "    return 1", "x" * 1000]
    expected = [codegen.encode(t) for t in texts]
    assert codegen.encode_batch(texts, num_threads=1) == expected
    assert codegen.encode_batch(texts, num_threads=3) == expected
    ids, offsets = codegen.encode_batch_flat(texts)
    assert ids.dtype == np.uint32 and offsets.dtype == np.int64
    assert [ids[a:b].tolist() for a, b in itertools.pairwise(offsets)] == expected
    assert codegen.decode_batch(expected) == texts
    assert codegen.decode(np.asarray(expected[0], dtype=np.int32)) == texts[0]
    assert codegen.encode_batch([]) == []


def test_vocabulary_lookups(codegen) -> None:
    assert codegen.token_to_id("Ġthe") == 262
    assert codegen.id_to_token(262) == "Ġthe"
    assert codegen.token_to_id("no-such-token") is None
    assert codegen.id_to_token(10**6) is None
    assert codegen.eos_token_id == 50256
    assert codegen.special_tokens == {"<|endoftext|>": 50256}


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda t: t.encode(b"bytes"), TypeError, "text must be str"),
        (lambda t: t.encode(None), TypeError, "text must be str"),
        (lambda t: t.encode_batch("one string"), TypeError, "not one str"),
        (lambda t: t.encode_batch(["ok", 3]), TypeError, r"texts\[1\] must be str"),
        (lambda t: t.decode([1, 50295]), ValueError, "unknown token id 50295 at position 1"),
        (lambda t: t.decode([-1]), ValueError, "unknown token id -1"),
        (lambda t: t.decode([1.0]), TypeError, r"ids\[0\] must be int"),
        (lambda t: t.decode("abc"), TypeError, "sequence of int"),
        (lambda t: t.decode(np.zeros((2, 2), np.int64)), TypeError, "1-D integer array"),
        (lambda t: t.encode_batch(["a"], num_threads=-1), ValueError, "num_threads"),
    ],
)
def test_bad_input_raises_clearly(codegen, call, error, match) -> None:
    with pytest.raises(error, match=match):
        call(codegen)


def _write(tmp_path, data) -> str:
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


@pytest.fixture(scope="module")
def gpt2_json() -> dict:
    return json.loads(shared_path("tokenizers", "gpt2", "tokenizer.json").read_text())


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(normalizer={"type": "NFC"}), "normalizer 'NFC' is not supported"),
        (lambda d: d["model"].update(type="WordPiece"), "not a BPE model"),
        (lambda d: d["model"].update(dropout=0.1), "dropout"),
        (lambda d: d.update(pre_tokenizer={"type": "Whitespace"}), "Whitespace"),
        (lambda d: d.update(post_processor={"type": "TemplateProcessing"}), "TemplateProcessing"),
        (lambda d: d.update(truncation={"max_length": 3}), "truncation"),
        (lambda d: d["added_tokens"][0].update(single_word=True), "single_word"),
        (
            lambda d: d["model"]["merges"].append(["Ġthe", "zzzzqq"]),
            "zzzzqq' is not in the vocabulary",
        ),
        (lambda d: d["model"]["merges"].append(["Ġthe"]), "not a pair"),
        (lambda d: d["model"]["vocab"].pop("a"), "no token for byte a"),
        (lambda d: d["model"].pop("vocab"), "model.vocab is missing"),
    ],
)
def test_bad_tokenizer_files_are_refused(tmp_path, gpt2_json, mutate, match) -> None:
    data = json.loads(json.dumps(gpt2_json))
    mutate(data)
    with pytest.raises(ValueError, match=match):
        Tokenizer.from_file(_write(tmp_path, data))


def test_unreadable_files(tmp_path) -> None:
    with pytest.raises(TokenizerFileError, match="cannot read"):
        Tokenizer.from_file(tmp_path / "missing.json")
    with pytest.raises(TokenizerFileError, match="not a JSON file"):
        Tokenizer.from_file(_write(tmp_path, "{not json"))
    with pytest.raises(FileNotFoundError, match="GPT-2 vocabulary not found"):
        Tokenizer.gpt2(tmp_path)


def test_added_token_flags_match_hf(tmp_path, gpt2_json) -> None:
    hf = pytest.importorskip("tokenizers")
    data = json.loads(json.dumps(gpt2_json))
    data["added_tokens"] += [
        {"id": 50257, "content": "<L>", "single_word": False, "lstrip": True, "rstrip": False,
         "normalized": False, "special": True},
        {"id": 50258, "content": "<R>", "single_word": False, "lstrip": False, "rstrip": True,
         "normalized": False, "special": True},
        {"id": 50259, "content": "ĠĠhi", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": True, "special": False},
    ]  # fmt: skip
    path = _write(tmp_path, data)
    ours, theirs = Tokenizer.from_file(path), hf.Tokenizer.from_file(path)
    for text in [
        "a   <L>b",
        "a<R>   b",
        "x \u3000<L>\t<R> \n y",
        "<L><R><L>",
        "ĠĠhi there",
        "  <R>",
    ]:
        ids = ours.encode(text, allowed_special="all")
        assert ids == theirs.encode(text).ids, text
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=False), text


def test_tokenizer_for_a_checkpoint_directory(tmp_path) -> None:
    assert Tokenizer.for_checkpoint(tmp_path).name == "codegen"
    assert Tokenizer.for_checkpoint(tmp_path, codegen2=True).name == "codegen2"
    (tmp_path / "tokenizer.json").write_bytes(
        shared_path("tokenizers", "gpt2", "tokenizer.json").read_bytes()
    )
    assert Tokenizer.for_checkpoint(tmp_path, codegen2=True).vocab_size == 50257
    codegen_file = shared_path("tokenizers", "codegen", "tokenizer.json")
    assert Tokenizer.for_checkpoint(tmp_path, tokenizer_file=codegen_file).vocab_size == 50295
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer.for_checkpoint(tmp_path, tokenizer_file=tmp_path / "nope.json")
