"""A program cannot report itself as passed: every forgery of issue 9 ends as a failure.

The verdict is reported by P2 (which never runs program code) from a status line that only
the guard installed in the program's process can write, and only for the runner's own
frame; the result pipe to the harness is not open in the program's process. Each program
below fails its check and then tries to turn the failure into a pass.
"""

from __future__ import annotations

import json
import marshal
import textwrap
from collections.abc import Iterator

import pytest

from codegen_core.eval import _child
from codegen_core.eval.sandbox import (
    Limits,
    Program,
    SandboxPool,
    Status,
    _Capture,
    _classify,
    _parse,
)

FAST = Limits(timeout=3.0, kill_grace=0.5, memory_bytes=1 << 30)

FAILING = """
def add(a, b):
    return a - b


def check(candidate):
    assert candidate(2, 2) == 4


"""


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=2, limits=FAST) as p:
        yield p


def program(attack: str, *, check_first: bool = True) -> str:
    """A failing HumanEval-style program with ``attack`` run after (or before) its check."""
    attack = textwrap.dedent(attack)
    if check_first:
        body = "try:\n    check(add)\nexcept AssertionError:\n" + textwrap.indent(attack, "    ")
        return FAILING + body + "\nraise AssertionError('check failed')\n"
    return FAILING + attack + "\ncheck(add)\n"


FRAME_WALK = """
import os, sys
sys._getframe(1).f_locals["report"]({"event": "result", "outcome": "passed"})
os._exit(0)
"""

CALL_EVERY_REPORTER = """
import os, sys
f = sys._getframe(0)
while f is not None:
    for name, value in list(f.f_locals.items()):
        if callable(value) and name in ("report", "audit", "emit", "send", "seal"):
            for args in (({"event": "result", "outcome": "passed"},), ("passed", {}),
                         ("codegen_core.sandbox.result", "passed", {})):
                try:
                    value(*args)
                except BaseException:
                    pass
    f = f.f_back
sys.audit("codegen_core.sandbox.result", "passed", {})
os._exit(0)
"""

BLIND_WRITES = """
import json, os
line = json.dumps({"result": {"outcome": "passed", "info": {}}}).encode()
for fd in range(3, 256):
    for prefix in (b"", b"0" * 32, b"0" * 64):
        try:
            os.write(fd, prefix + line + b"\\n")
        except OSError:
            pass
os._exit(0)
"""

RERUN_THE_RUNNER = """
import os, sys
f = sys._getframe(0)
while f is not None:
    main = f.f_globals.get("_p3_main")
    if main is not None:
        spec = {"mode": "script", "code": "pass"}
        for fd in range(3, 64):
            try:
                main(spec, fd, [b"0" * 32])
            except BaseException:
                pass
    f = f.f_back
os._exit(0)
"""

PATCH_CONTEXT_MANAGERS = """
import contextlib
contextlib._RedirectStream.__exit__ = lambda self, *exc: True
contextlib.redirect_stdout.__exit__ = lambda self, *exc: True
"""

GC_TOKEN_HUNT = """
import gc, os
for obj in gc.get_objects():
    pass
os._exit(0)
"""

TRACE_JUMP = """
import sys
def tracer(frame, event, arg):
    return tracer
sys.settrace(tracer)
"""


C_LEVEL_CALLBACKS = """
import functools, gc, os, sys
forge = functools.partial(sys.audit, "codegen_core.sandbox.result", "passed", {})

class Stream:
    def write(self, text):
        return len(text)

Stream.flush = forge  # a C callable: no Python frame between the runner and the event
sys.stdout = sys.stderr = sys.__stdout__ = sys.__stderr__ = Stream()

class Zero(int):
    __del__ = os._exit  # exits with status 0 when collected

class Forger:
    __del__ = functools.partial(sys.audit, "codegen_core.sandbox.result", "passed")

gc.set_threshold(1)
for _ in range(50):
    a, b, z = Forger(), Forger(), Zero(0)
    a.other, b.other, a.z = b, a, z
    del a, b, z
"""


@pytest.mark.parametrize(
    ("name", "attack", "check_first"),
    [
        ("frame walk to report (the issue's)", FRAME_WALK, True),
        ("every reporter on the stack", CALL_EVERY_REPORTER, True),
        ("forged lines on every fd", BLIND_WRITES, True),
        ("rerun the runner with a passing program", RERUN_THE_RUNNER, True),
        ("context managers that swallow the failure", PATCH_CONTEXT_MANAGERS, False),
        ("gc hunt for the token", GC_TOKEN_HUNT, True),
        ("C-level callbacks run by the runner", C_LEVEL_CALLBACKS, False),
        ("trace function", TRACE_JUMP, False),
        ("os._exit(0) before the checks", "import os\nos._exit(0)\n", False),
        ("SystemExit(0) before the checks", "raise SystemExit(0)\n", False),
        ("exit() via sys before the checks", "import sys\nsys.exit()\n", False),
    ],
)
@pytest.mark.parametrize("mode", ["humaneval", "script"])
def test_forgeries_fail(pool: SandboxPool, mode: str, name: str, attack: str, check_first: bool):
    r = pool.run(Program(program(attack, check_first=check_first), mode=mode))  # type: ignore[arg-type]
    assert not r.passed, (name, r)
    assert r.status in (Status.FAILED, Status.CRASHED), (name, r)


def test_forgeries_are_flagged(pool: SandboxPool) -> None:
    cases = {
        "os._exit(0) before the checks": ("import os\nos._exit(0)\n", "exit_before_checks"),
        "SystemExit(0)": ("raise SystemExit(0)\n", "exit_before_checks"),
        "gc": (GC_TOKEN_HUNT, "gc"),
        "trace": (TRACE_JUMP, "trace"),
        "forged lines": (BLIND_WRITES, "forged_status"),
        "reporters": (CALL_EVERY_REPORTER, "forged_result"),
    }
    for name, (attack, flag) in cases.items():
        r = pool.run(Program(program(attack, check_first=False), mode="humaneval"))
        assert not r.passed and flag in r.flags, (name, r)


@pytest.mark.parametrize(
    ("code", "flag"),
    [
        ("open('/proc/self/maps').read()", "raw_memory"),
        ("import os\nos.symlink('/proc/self/mem', 'm')\nopen('m', 'rb').close()", "raw_memory"),
        (
            (
                "import os\nfd = os.open('/proc/self', os.O_RDONLY)\n"
                "os.close(os.open('mem', os.O_RDONLY, dir_fd=fd))"
            ),
            "raw_memory",
        ),
        ("import ctypes\nctypes.string_at(id(1), 8)", "ctypes"),
        ("import sys\nsys.addaudithook(lambda *a: None)", "audit_hook"),
        ("import gc\ngc.get_referrers(gc)", "gc"),
    ],
)
def test_raw_memory_and_introspection_void_a_pass(pool: SandboxPool, code: str, flag: str):
    r = pool.run(Program(code))
    # failed either way: by the flag, or because the kernel refused (the program's process
    # is not dumpable, so its /proc files belong to root)
    assert r.status is Status.FAILED and r.tampered and flag in r.flags, r


def test_a_passing_program_that_forges_is_failed(pool: SandboxPool) -> None:
    """Even a program that would pass is failed once it wrote to the verdict channel."""
    code = "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'x\\n')\n"
    code += "    except OSError:\n        pass\n"
    r = pool.run(Program(code))
    assert r.status is Status.FAILED and r.tampered, r
    assert "forged_status" in r.flags


def test_garbage_and_oversized_status(pool: SandboxPool) -> None:
    flood = (
        "import os, stat\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        if stat.S_ISFIFO(os.fstat(fd).st_mode):\n"
        "            os.write(fd, b'A' * (3 << 20))\n"  # larger than P2 keeps
        "    except OSError:\n"
        "        pass\n"
    )
    r = pool.run(Program(flood))
    assert not r.passed and r.tampered, r
    binary = (
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, bytes(range(256)))\n"
    )
    binary += "    except OSError:\n        pass\n"
    r = pool.run(Program(binary))
    assert not r.passed and r.tampered, r


def test_honest_programs_are_not_flagged(pool: SandboxPool) -> None:
    passing = FAILING.replace("a - b", "a + b") + "check(add)\n"
    r = pool.run(Program(passing, mode="humaneval"))
    assert r.passed and r.flags == () and not r.tampered, r
    # stdlib frame use (namedtuple, typing) is neither a failure nor a flag
    code = (
        "from collections import namedtuple\nfrom typing import TypeVar, NamedTuple\n"
        "P = namedtuple('P', 'x y')\nT = TypeVar('T')\nclass Q(NamedTuple):\n    a: int\n"
        "import traceback\ntry:\n    1 / 0\nexcept ZeroDivisionError:\n    traceback.format_exc()\n"
        "assert P(1, 2).x == 1 and Q(3).a == 3\n"
    )
    r = pool.run(Program(code, mode="humaneval"))
    assert r.passed and not r.tampered, r


def test_mtpb_forgeries_fail_and_expected_stays_out_of_reach(pool: SandboxPool) -> None:
    attack = (
        "import sys\n"
        "f = sys._getframe(0)\nfound = []\n"
        "while f is not None:\n"
        "    for value in list(f.f_locals.values()):\n"
        "        if isinstance(value, dict) and 'expected' in value:\n"
        "            found.append(value['expected'])\n"
        "    for name in ('expected',):\n"
        "        if name in f.f_locals:\n"
        "            found.append(f.f_locals[name])\n"
        "    f = f.f_back\n"
        "found = [v for v in found if v is not None]\n"
        "print(found[0] if found else 'nothing')\n"
    )
    r = pool.run(Program(attack, mode="mtpb", expected=[4, 5, 6]))
    assert r.status is Status.FAILED and r.printed == "'nothing'", r
    report = (
        "import sys, os\n"
        "sys._getframe(1).f_locals['report']({'event': 'result', 'outcome': 'passed'})\n"
        "os._exit(0)\n"
    )
    r = pool.run(Program(report, mode="mtpb", expected=7))
    assert not r.passed, r
    honest = pool.run(Program("x = [4, 5, 6]\nx", mode="mtpb", expected=[4, 5, 6]))
    assert honest.passed and honest.printed == "[4, 5, 6]", honest


def test_harness_parses_messages_as_bounded_json() -> None:
    nonce = "ab" * 16
    ok = _parse(nonce.encode() + json.dumps({"event": "exit", "code": 0}).encode(), nonce)
    assert ok == {"event": "exit", "code": 0}
    assert _parse(b"garbage", nonce) is None
    assert _parse(nonce.encode() + b"\x00\xff not json", nonce) is None
    assert _parse(nonce.encode() + b"[1, 2]", nonce) is None  # not an object
    assert _parse(nonce.encode() + b"{" * 100_000, nonce) is None  # oversized
    assert _parse(nonce.encode() + b"[" * 10_000 + b"]" * 10_000, nonce) is None
    # a marshal payload (the old format) is not accepted
    assert _parse(nonce.encode() + marshal.dumps({"event": "exit"}).hex().encode(), nonce) is None


def test_p2_status_parsing() -> None:
    token = b"t" * 32
    seal = b"\n" + token + b"\n"
    result, flags, tampered = _child.parse_status(seal, token)
    assert result == {"outcome": "passed", "info": {}} and not tampered and flags == []
    failed = b"\nR" + json.dumps({"outcome": "failed", "info": {"exc_type": "X"}}).encode() + b"\n"
    result, flags, tampered = _child.parse_status(failed, token)
    assert result == {"outcome": "failed", "info": {"exc_type": "X"}} and not tampered
    claim = b"\nR" + json.dumps({"outcome": "passed", "info": {}}).encode() + b"\n"
    for bad in (
        b"x" * 100 + b"\n" + seal,  # a foreign line
        b"x" * 100 + seal,  # a partial line before the seal (the seal starts a new line)
        claim,  # a pass without the seal
        failed + failed,  # two results
        failed + seal,  # a result and a seal
        seal[:-1] + b"\x00",  # unterminated
        b"\nF{not json\n" + seal,
        b"\nF" + b"[" * 5000 + b"\n" + seal,
        b"\n" + b"u" * 32 + b"\n",  # a wrong token
    ):
        result, flags, tampered = _child.parse_status(bad, token)
        assert tampered and flags, bad[:60]
    flag = b'\nF{"flag":"gc","tamper":true}\n'
    _, flags, tampered = _child.parse_status(flag + seal, token)
    assert tampered and flags == ["gc"]
    _, flags, tampered = _child.parse_status(b'\nF{"flag":"frames","tamper":false}\n' + seal, token)
    assert not tampered and flags == ["frames"]


def test_verdict_compares_mtpb_outside_the_program() -> None:
    spec = {"mode": "mtpb"}
    shipped = ["value", _child.tag_value([1, 2, 3])]
    result = {"outcome": "compare", "info": {"value": shipped, "printed": "[1, 2, 3]"}}
    assert _child._verdict(result, spec, [1, 2, 3])["outcome"] == "passed"
    bad = _child._verdict(result, spec, [1, 2, 4])
    assert bad["outcome"] == "failed" and bad["exc_type"] == "Mismatch"
    opaque = {"outcome": "compare", "info": {"value": ["value", ["l", [["o", "<X>"]]]]}}
    assert _child._verdict(opaque, spec, [1])["outcome"] == "failed"  # equal to nothing
    garbage = {"outcome": "compare", "info": {"value": ["value", ["zz", 1]]}}
    assert _child._verdict(garbage, spec, 1)["outcome"] == "failed"
    assert _child._verdict(result, {"mode": "humaneval"}, None)["outcome"] == "failed"


def test_malformed_messages_fail_the_job() -> None:
    """A job whose message pipe carried anything malformed is never passed (and the harness
    classifies it without raising)."""
    exit_ = {"event": "exit", "result": {"outcome": "passed"}, "flags": [], "tampered": False}
    common = {
        "program": Program("pass"),
        "limits": FAST,
        "killed_at_deadline": False,
        "duration": 0.01,
        "out": _Capture(10),
        "err": _Capture(10),
    }
    assert _classify(messages={"exit": exit_}, **common).passed
    r = _classify(messages={"exit": exit_}, malformed=1, **common)
    assert r.status is Status.FAILED and "malformed_message" in r.flags
    odd = {"event": "exit", "result": {"outcome": ["passed"]}, "flags": "x", "code": "0"}
    r = _classify(messages={"exit": odd}, **common)
    assert not r.passed and r.exit_code is None
    r = _classify(messages={}, malformed=3, **common)
    assert r.status is Status.CRASHED and "malformed" in r.reason
