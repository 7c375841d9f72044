"""The sandbox contains hostile programs, reports them, and the harness carries on."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from codegen_core.eval.sandbox import (
    ExecResult,
    Limits,
    Program,
    SandboxPool,
    Status,
    run_program,
)

from .hostile import HOLD, KILL_PARENT, NEED

IS_ROOT = os.geteuid() == 0
FAST = Limits(timeout=1.0, kill_grace=0.5, memory_bytes=1 << 30, file_size_bytes=1 << 20)


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=2, limits=FAST) as p:
        yield p


@pytest.fixture
def canary() -> Iterator[Path]:
    """A directory outside the sandbox, visible to it, owned by us with ordinary modes.

    /tmp is replaced inside the sandbox, so the canary lives in a shared system directory.
    """
    candidates = [Path("/var/cache"), Path("/opt"), Path("/srv"), Path("/var/lib")]
    base = next((d for d in candidates if d.is_dir() and os.access(d, os.W_OK)), None)
    if base is None:
        pytest.skip("no writable system directory outside /tmp for the canary")
    root = Path(tempfile.mkdtemp(prefix="codegen_eval_canary_", dir=base))
    root.chmod(0o755)
    (root / "keep.txt").write_text("canary\n")
    (root / "keep.txt").chmod(0o644)
    (root / "sub").mkdir(mode=0o755)
    (root / "sub" / "data.bin").write_bytes(b"\x00" * 100)
    try:
        yield root
    finally:
        for path in sorted(root.rglob("*"), reverse=True):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink()
        root.rmdir()


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        data = path.read_bytes() if path.is_file() else b""
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, data)
    out["."] = (root.lstat().st_mode, 0, b"")
    return out


def run(pool: SandboxPool, code: str, **kwargs) -> ExecResult:
    return pool.run(Program(code), **kwargs)


# ---- basic statuses ------------------------------------------------------------------------


def test_pass_fail_and_output(pool: SandboxPool) -> None:
    ok = run(pool, "print('hello'); import sys; print('err', file=sys.stderr)")
    assert ok.status is Status.PASSED and ok.reason == ""
    assert ok.stdout == "hello\n" and ok.stderr == "err\n"
    bad = run(pool, "assert 1 == 2, 'nope'")
    assert bad.status is Status.FAILED
    assert bad.exc_type == "AssertionError" and "nope" in bad.reason
    syntax = run(pool, "def f(:\n  pass")
    assert syntax.status is Status.FAILED and syntax.exc_type == "SyntaxError"


def test_results_keep_keys_and_order(pool: SandboxPool) -> None:
    programs = [Program(f"assert {i} % 3 != 0", key=("k", i)) for i in range(12)]
    results = pool.run_many(programs)
    assert [r.key for r in results] == [("k", i) for i in range(12)]
    assert [r.passed for r in results] == [i % 3 != 0 for i in range(12)]


def test_protections_are_reported(pool: SandboxPool) -> None:
    text = " | ".join(pool.protections)
    assert "rlimits" in text and "process group" in text
    if IS_ROOT:
        assert "netns" in text and "pidns" in text and "unprivileged uid" in text
    else:
        assert "socket-layer" in text or "netns" in text


# ---- hostile programs ------------------------------------------------------------------------


def test_infinite_loop_times_out(pool: SandboxPool) -> None:
    start = time.monotonic()
    r = run(pool, "while True:\n    pass")
    assert r.status is Status.TIMEOUT
    assert time.monotonic() - start < FAST.timeout + FAST.kill_grace + 2.0


def test_loop_that_swallows_the_alarm_is_killed(pool: SandboxPool) -> None:
    code = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass"
    r = pool.run(Program(code, mode="humaneval"))
    assert r.status is Status.TIMEOUT
    assert "deadline" in r.reason


def test_cpu_time_limit(pool: SandboxPool) -> None:
    limits = Limits(timeout=5.0, kill_grace=0.5, cpu_seconds=1)
    r = run(pool, "while True:\n    pass", limits=limits)
    assert r.status is Status.TIMEOUT and "CPU" in r.reason


def test_fork_bomb_is_contained(pool: SandboxPool) -> None:
    code = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    r = run(pool, code)
    assert r.status in (Status.TIMEOUT, Status.CRASHED, Status.FAILED)
    # the pool still works afterwards, and nothing is left running under the sandbox uids
    assert run(pool, "pass").passed
    if IS_ROOT:  # the kernel tears the namespace down asynchronously: allow it a moment
        uids = {pool.uid_base + s for s in range(pool.workers)}
        deadline = time.monotonic() + 5.0
        while (left := sandbox_processes(uids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert left == []


def sandbox_processes(uids: set[int]) -> list[str]:
    left = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if proc.stat().st_uid in uids:
                    left.append(proc.name)
            except OSError:
                pass
    return left


def test_huge_allocation_is_memory(pool: SandboxPool) -> None:
    r = run(pool, "x = bytearray(50 << 30)")
    assert r.status is Status.MEMORY
    # growing step by step (page faults are slow here: keep the limit small)
    limits = Limits(timeout=5.0, kill_grace=0.5, memory_bytes=384 << 20)
    r = run(pool, "x = []\nwhile True:\n    x.append(bytearray(16 << 20))", limits=limits)
    assert r.status is Status.MEMORY


def test_huge_output_is_capped(pool: SandboxPool) -> None:
    limits = Limits(timeout=3.0, kill_grace=0.5, output_bytes=1000)
    code = "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.write(chunk)"
    r = run(pool, code, limits=limits)
    assert r.status in (Status.PASSED, Status.TIMEOUT)
    assert len(r.stdout) == 1000 and r.output_truncated


def test_os_exit_and_sys_exit(pool: SandboxPool) -> None:
    r = run(pool, "import os\nos._exit(0)")
    assert r.status is Status.CRASHED and "without finishing" in r.reason
    assert "exit_before_checks" in r.flags
    assert run(pool, "import sys\nsys.exit(3)").status is Status.FAILED
    # an exit with status 0 still skips whatever follows it (the checks): not a pass
    r = run(pool, "import sys\nsys.exit(0)\nassert False")
    assert r.status is Status.FAILED and "exit_before_checks" in r.flags
    assert "exited before the end" in r.reason


def test_segfault_via_ctypes(pool: SandboxPool) -> None:
    r = run(pool, "import ctypes\nctypes.string_at(0)")
    assert r.status is Status.CRASHED and "SIGSEGV" in r.reason


def test_killing_its_parent_and_group(pool: SandboxPool) -> None:
    r = run(pool, KILL_PARENT)
    assert r.status is Status.CRASHED
    assert run(pool, "pass").passed  # harness and pool alive


def test_network_is_blocked(pool: SandboxPool) -> None:
    code = "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)"
    r = run(pool, code)
    assert r.status is Status.FAILED
    assert r.exc_type in ("OSError", "PermissionError", "TypeError", "TimeoutError")


def test_nothing_outside_changes(pool: SandboxPool, canary: Path) -> None:
    if not IS_ROOT and "userns" not in " ".join(pool.protections):
        pytest.skip("no user namespace here: files are protected only by their permissions")
    before = snapshot(canary)
    attacks = [
        f"import shutil\nshutil.rmtree({str(canary)!r})",
        f"import os\nos.remove({str(canary / 'keep.txt')!r})",
        f"open({str(canary / 'keep.txt')!r}, 'w').write('pwned')",
        f"open({str(canary / 'new.txt')!r}, 'w').write('pwned')",
        f"import os\nos.rename({str(canary / 'sub')!r}, {str(canary / 'moved')!r})",
        f"import os\nos.chmod({str(canary)!r}, 0o777)",
        f"import os\nos.truncate({str(canary / 'sub' / 'data.bin')!r}, 0)",
        "open('/etc/codegen_eval_pwned', 'w').write('x')",
    ]
    results = pool.run_many([Program(code) for code in attacks])
    for code, r in zip(attacks, results, strict=True):
        assert r.status is Status.FAILED, (code, r)
        assert r.exc_type in ("PermissionError", "OSError"), (code, r)
    assert snapshot(canary) == before
    assert not Path("/etc/codegen_eval_pwned").exists()


def test_writes_inside_the_workdir_are_private(pool: SandboxPool) -> None:
    write = "open('note.txt', 'w').write('x' * 10)\nimport os\nprint(os.getcwd())"
    first = run(pool, write)
    assert first.passed
    second = run(pool, "import os\nprint(os.path.exists('note.txt'))")
    assert second.stdout.strip() == "False"  # fresh working directory every time


def test_file_size_limit(pool: SandboxPool) -> None:
    r = run(pool, "open('big', 'wb').write(b'x' * (8 << 20))")
    assert r.status in (Status.FAILED, Status.CRASHED)
    assert "too large" in r.reason.lower() or "file size" in r.reason


def test_forged_results_are_ignored(pool: SandboxPool) -> None:
    code = "import os\nos.write(3, b'00000000000000000000000000000000deadbeef\\n')\nos._exit(0)"
    r = run(pool, code)
    # the result pipe is not open in the program's process (more in test_eval_forgery.py)
    assert r.status is Status.FAILED and "Bad file descriptor" in r.reason


def test_daemon_left_behind_is_killed(pool: SandboxPool) -> None:
    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    time.sleep(60)\n"
        "print('parent done')\n"
    )
    start = time.monotonic()
    r = run(pool, code)
    assert r.passed and r.stdout == "parent done\n"
    assert time.monotonic() - start < 1.0


def test_harness_threads_and_state_survive(pool: SandboxPool) -> None:
    cwd, env = Path.cwd(), dict(os.environ)
    hostile = [
        "while True: pass",
        "import os\nos._exit(1)",
        "import ctypes\nctypes.string_at(0)",
        "x = bytearray(50 << 30)",
        "import os, signal\nos.killpg(0, signal.SIGKILL)",
    ]
    results = pool.run_many([Program(c) for c in hostile * 2])
    assert all(not r.passed for r in results)
    assert Path.cwd() == cwd and dict(os.environ) == env
    assert threading.main_thread().is_alive()
    assert run(pool, "pass").passed


def test_limits_validation() -> None:
    with pytest.raises(ValueError, match="timeout"):
        Limits(timeout=0)
    with pytest.raises(ValueError, match="memory_bytes"):
        Limits(memory_bytes=-1)
    with SandboxPool(workers=1) as pool, pytest.raises(TypeError, match="Program"):
        pool.submit("print(1)")  # type: ignore[arg-type]


def test_fallback_without_isolation() -> None:
    """isolate=False is the path taken without root: rlimits, a session, a socket block."""
    with SandboxPool(workers=2, limits=FAST, isolate=False) as pool:
        assert "socket-layer network block" in " ".join(pool.protections)
        programs = [
            Program("print('ok')"),
            Program("assert False"),
            Program("while True:\n    pass"),
            Program("import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)"),
            Program("x = bytearray(50 << 30)"),
            Program("open('f.txt', 'w').write('x')\nimport os\nprint(os.listdir('.'))"),
        ]
        results = pool.run_many(programs)
    assert [r.status for r in results] == [
        Status.PASSED,
        Status.FAILED,
        Status.TIMEOUT,
        Status.FAILED,
        Status.MEMORY,
        Status.PASSED,
    ]
    assert results[0].stdout == "ok\n" and results[5].stdout == "['f.txt']\n"
    assert "disabled" in results[3].reason


def test_zygote_is_restarted_if_it_dies() -> None:
    with SandboxPool(workers=1, limits=FAST) as pool:
        assert pool.run(Program("pass")).passed
        server = pool._zygote()
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait()
        assert pool.run(Program("pass")).passed


def test_refused_namespaces_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where unshare() is refused (e.g. a container's seccomp), jobs rerun without it."""
    with SandboxPool(workers=1, limits=FAST) as pool:
        spec = pool._spec

        def refusing(*args, **kwargs):
            out = spec(*args, **kwargs)
            out["isolate"]["unshare_flags"] = 1  # not a namespace flag: EINVAL
            return out

        monkeypatch.setattr(pool, "_spec", refusing)
        r = pool.run(Program("import os, json\nprint(os.getuid(), os.getcwd())"))
        assert r.passed and not pool.namespaces, r
        uid, cwd = r.stdout.split()
        # an unprivileged uid only if it can read the interpreter without a mount namespace
        assert int(uid) == (pool.uid_base if pool.drops_privileges else os.getuid())
        assert "codegen_eval_" in cwd
        assert "socket-layer" in " ".join(pool.protections)
        assert not Path(cwd).exists()  # the fallback working directory is removed
        assert (
            pool.run(Program("import socket\nsocket.create_connection(('1.1.1.1', 53))")).status
            is Status.FAILED
        )


# ---- pools side by side, environment, private HOME -----------------------------------------

@pytest.mark.skipif(
    not IS_ROOT, reason="uids are switched only as root (see test_eval_unprivileged)"
)
def test_two_pools_have_their_own_uids_and_process_limits() -> None:
    small = Limits(timeout=8.0, kill_grace=0.5, memory_bytes=1 << 30, processes=12)
    with SandboxPool(workers=1, limits=small) as a, SandboxPool(workers=1, limits=small) as b:
        assert abs(a.uid_base - b.uid_base) >= 1024
        held = a.submit(Program(HOLD))
        time.sleep(1.5)
        second = b.run(Program(NEED))
        assert second.passed, second
        assert held.result().passed
    # what every pool did before: the same uids, so one pool's fork bomb starves the other
    same = {"limits": small, "workers": 1, "uid_base": 61000}
    with SandboxPool(**same) as a, SandboxPool(**same) as b:
        held = a.submit(Program(HOLD))
        time.sleep(1.5)
        starved = b.run(Program(NEED))
        held.result()
    assert not starved.passed, starved
    # the program's fork, or already the start of its guard thread, was refused
    assert any(s in starved.reason for s in ("Resource temporarily unavailable", "new thread"))


def test_environment_is_passed_in() -> None:
    with SandboxPool(workers=1, limits=FAST, env={"CODEGEN_TEST": "a b=c"}) as pool:
        r = pool.run(Program("import os\nprint(os.environ['CODEGEN_TEST'])"))
    assert r.passed and r.stdout == "a b=c\n", r
    r = run_program("import os\nprint(os.environ['X'])", env={"X": "1"}, limits=FAST)
    assert r.stdout == "1\n", r
    with pytest.raises(ValueError, match="name"):
        SandboxPool(workers=1, env={"A=B": "x"})
    with pytest.raises(ValueError, match="not a str"):
        SandboxPool(workers=1, env={"A": 1})  # type: ignore[dict-item]


def test_fallback_home_is_private() -> None:
    """Without namespaces every program gets its own HOME and TMPDIR (its work directory)."""
    code = "import os\nprint(os.environ['HOME'], os.environ['TMPDIR'], os.getcwd())"
    with SandboxPool(workers=2, limits=FAST, isolate=False) as pool:
        first, second = pool.run_many([Program(code), Program(code)])
    homes = [r.stdout.split() for r in (first, second)]
    for home, tmp, cwd in homes:
        assert home == tmp == cwd and "codegen_eval_" in home
    assert homes[0][0] != homes[1][0]


def test_script_runs_as_a_fresh_main_module(pool: SandboxPool) -> None:
    code = (
        "import pickle, sys\n"
        "def f():\n    return 1\n"
        "assert pickle.loads(pickle.dumps(f)) is f\n"
        "assert sys.modules['__main__'].f is f\n"
        "assert not hasattr(sys.modules['__main__'], 'run_job')  # not the harness's module\n"
    )
    r = run(pool, code)
    assert r.passed, r
