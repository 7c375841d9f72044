"""``SamplingParams``: the one set of sampling settings, for ``generate``, ``infill``,
``Session`` and the evaluation's :class:`~codegen_core.eval.sampler.Sampler` protocol.

It lives outside :mod:`codegen_core.sampling` (which loads JAX) so that evaluation can
import it without loading the model.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. The defaults are greedy decoding of up to 128 tokens, one sample.

    ``temperature`` 0 means greedy (``top_k``/``top_p`` are then ignored); ``top_p`` 1.0 and
    ``top_k`` 0 disable those filters. ``n`` is the number of samples per prompt, ``seed``
    the random seed, and ``stop`` CodeGen-style stop patterns (regexes, ``re.MULTILINE``)
    applied to the decoded text (:func:`codegen_core.tokenizer.stop.truncate_before_pattern`).
    CodeGen's HumanEval setting is ``temperature=0.2, top_p=0.95`` (the ``eval`` command's
    defaults).
    """

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    n: int = 1
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def positive_int(name: str, value: object) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SamplingParams.{name} must be a positive int, got {value!r}")

        positive_int("max_new_tokens", self.max_new_tokens)
        positive_int("n", self.n)
        if not self.temperature >= 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"SamplingParams.top_k must be an int >= 0, got {self.top_k!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"SamplingParams.seed must be an int, got {self.seed!r}")
        if isinstance(self.stop, str) or not all(isinstance(p, str) for p in self.stop):
            raise TypeError(f"SamplingParams.stop must be a sequence of str, got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(self.stop))  # a list is accepted, stored hashable

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
