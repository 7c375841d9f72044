"""The native binding itself: the views it keeps while the GIL is released stay valid, and
the flat batch (workers, a copy barrier) gives encode()'s ids or the first error."""

from __future__ import annotations

import threading
import time

import pytest

from codegen_core.tokenizer.core import Tokenizer


def _text(i: int) -> str:
    # 320 KB per text: above malloc's mmap threshold, so a freed text is unmapped at once
    # and a dangling view would fault or read other data, not stale bytes.
    return f"def f_{i}(x):\n    return x * {i} + 'é'\n" * 8000


def test_encode_batch_survives_the_caller_emptying_its_list() -> None:
    tok = Tokenizer.codegen()
    # 48 texts (15 MB): long enough to encode that the list is emptied mid-call, even warm
    expected = tok.encode_batch([_text(i) for i in range(48)], num_threads=1)
    texts = [_text(i) for i in range(48)]  # the list holds the only reference to each str
    started = threading.Event()
    result: list[list[list[int]]] = []

    def encode() -> None:
        started.set()
        # the bound method directly: the Python wrapper copies the list itself
        result.append(tok._core.encode_batch(texts, [], [], 1, False))

    worker = threading.Thread(target=encode)
    worker.start()
    started.wait()
    time.sleep(0.01)  # the encoder now runs without the GIL
    assert worker.is_alive(), "encoding finished too early for the test to mean anything"
    texts.clear()  # frees every str unless the binding holds references
    scratch = ["z" * 330_000 for _ in range(48)]  # reuse the freed memory
    worker.join()
    del scratch
    assert result == [expected]


def test_encode_batch_flat_equals_encode_for_any_thread_count() -> None:
    """The flat batch (each worker's ids in its own buffer, then copied in text order)."""
    tok = Tokenizer.codegen()
    texts = ["", "def f(x):\n    return x\n" * 40, "x", "é中 😀 a" * 7, "", "  \n\t" * 33] * 5
    expected = [tok.encode(t) for t in texts]
    for threads in (1, 2, 3, 64):
        ids, offsets = tok.encode_batch_flat(texts, num_threads=threads)
        assert ids.dtype.name == "uint32" and offsets.tolist()[0] == 0
        assert [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(len(texts))] == expected
    ids, offsets = tok.encode_batch_flat([])
    assert ids.tolist() == [] and offsets.tolist() == [0]


def test_encode_batch_flat_error_in_one_worker_raises_and_the_tokenizer_goes_on() -> None:
    """A text that fails in one worker (a disallowed special token) stops the batch with the
    text's index while the other workers wait at the copy barrier; later batches work."""
    tok = Tokenizer.codegen()
    texts = [f"def f{i}(x):\n    return x + {i}\n" * (20 + i) for i in range(30)]
    bad = [*texts[:17], "a<|endoftext|>b", *texts[18:]]
    expected = [tok.encode(t) for t in texts]
    for threads in (2, 4):
        with pytest.raises(ValueError, match=r"texts\[17\]"):
            tok.encode_batch_flat(bad, num_threads=threads)
        ids, offsets = tok.encode_batch_flat(texts, num_threads=threads)
        assert [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(len(texts))] == expected
