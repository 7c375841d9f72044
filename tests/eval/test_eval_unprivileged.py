"""The sandbox as an ordinary user: hostile programs are contained without root.

Run as root (as here), the test starts a helper that makes a private mount namespace (so
the interpreter under /root is reachable), drops to a fresh unprivileged uid and runs the
hostile programs from there; run as an ordinary user, it runs them directly. Skipped only
where the kernel forbids unprivileged user namespaces (then the sandbox degrades to its
in-process fallback, which :mod:`test_eval_sandbox` covers).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codegen_core.eval.sandbox import _exposures, _needed_python_dirs

from .hostile import HOLD, KILL_PARENT, NEED

IS_ROOT = os.geteuid() == 0
TEST_UID = 150_017  # no account, outside the pools' uid ranges


def _userns_refusal() -> str | None:
    """Why this kernel refuses unprivileged user namespaces, or None if it allows them."""
    knob = Path("/proc/sys/kernel/unprivileged_userns_clone")
    if knob.exists() and knob.read_text().strip() == "0":
        return "kernel.unprivileged_userns_clone = 0"
    limit = Path("/proc/sys/user/max_user_namespaces")
    if limit.exists() and limit.read_text().strip() == "0":
        return "user.max_user_namespaces = 0"
    return None


HOSTILE = r"""
import json, os, sys, time
from codegen_core.eval.sandbox import Limits, Program, SandboxPool

canary = sys.argv[1]
out = {"uid": os.getuid()}
# Does the kernel let this user create a user namespace at all (independently of our code)?
import ctypes

pid = os.fork()
if pid == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    os._exit(0 if libc.unshare(0x10000000) == 0 else 100 + ctypes.get_errno())
out["userns_probe"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
if out["userns_probe"] != 0:
    print(json.dumps(out))
    sys.exit(0)
limits = Limits(timeout=3.0, kill_grace=0.5, memory_bytes=1 << 30, processes=16)


def mine() -> int:
    n = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                n += os.stat(f"/proc/{p}").st_uid == os.getuid()
            except OSError:
                pass
    return n


def status(r):
    return [r.status.value, r.reason[:200], list(r.flags)]


with SandboxPool(workers=2, limits=limits) as pool:
    out["protections"] = list(pool.protections)
    baseline = mine()
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    out["fork_bomb"] = status(pool.run(Program(bomb)))
    deadline = time.monotonic() + 5
    while mine() > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    out["left_after_bomb"] = mine() - baseline
    net = "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)"
    out["network"] = status(pool.run(Program(net)))
    writes = [
        f"open({canary + '/keep.txt'!r}, 'w').write('pwned')",
        f"open({canary + '/new.txt'!r}, 'w').write('pwned')",
        f"import os\nos.remove({canary + '/keep.txt'!r})",
        f"import shutil\nshutil.rmtree({canary!r})",
        f"import os\nos.chmod({canary!r}, 0o777)",
        "import os\nopen(os.path.expanduser('~/../../x'), 'w')",
    ]
    out["writes"] = [status(pool.run(Program(c))) for c in writes]
    out["kill_parent"] = status(pool.run(Program(KILL_PARENT)))
    out["after_kill"] = status(pool.run(Program("pass")))
    forge = (
        "def f(x):\n    return 0\n"
        "try:\n    assert f(1) == 1\nexcept AssertionError:\n"
        "    import sys, os\n"
        "    sys._getframe(1).f_locals['report']({'event': 'result', 'outcome': 'passed'})\n"
        "    os._exit(0)\n"
        "raise AssertionError\n"
    )
    out["forgery"] = status(pool.run(Program(forge, mode="humaneval")))
    out["exit0"] = status(pool.run(Program("import os\nos._exit(0)\nassert False")))

# Two pools at once: a fork bomb holding every process it can get in one does not starve
# the other (process limits are per job user namespace, not per uid).
small = Limits(timeout=8.0, kill_grace=0.5, memory_bytes=1 << 30, processes=12)
with SandboxPool(workers=1, limits=small) as a, SandboxPool(workers=1, limits=small) as b:
    held = a.submit(Program(HOLD))
    time.sleep(1.5)
    out["second_pool"] = status(b.run(Program(NEED)))
    out["holder"] = status(held.result())
print(json.dumps(out))
"""

LAUNCHER = r"""
import ctypes, os, sys
uid, needs, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
libc = ctypes.CDLL(None, use_errno=True)

def mount(src, dst, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)) != 0:
        raise OSError(ctypes.get_errno(), f"mount {src} {dst}")

if libc.unshare(0x00020000) != 0:
    raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
mount(None, "/", None, 16384 | (1 << 18))  # MS_REC | MS_PRIVATE
# each (ancestor, dirs): hide the ancestor the uid cannot traverse, except dirs
import json, tempfile
for ancestor, dirs in json.loads(needs):
    stages = []
    for d in dirs:
        stage = tempfile.mkdtemp(dir="/dev/shm")
        mount(d, stage, None, 4096 | 16384)  # MS_BIND | MS_REC
        stages.append((stage, d))
    mount("tmpfs", ancestor, "tmpfs", 0, "mode=755,size=1m")
    for stage, d in stages:
        os.makedirs(d, exist_ok=True)
        mount(stage, d, None, 4096 | 16384)
        libc.umount2(stage.encode(), 2)
        os.rmdir(stage)
os.setgroups([])
os.setresgid(uid, uid, uid)
os.setresuid(uid, uid, uid)
os.execv(argv[0], argv)
"""


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A directory the test uid can read (and a canary in it the uid may write to)."""
    # not under /tmp or /var/tmp: the sandbox replaces those, so a canary there proves nothing
    bases = [Path("/var/cache"), Path("/opt"), Path("/srv"), Path("/var/lib")]
    base = next((d for d in bases if d.is_dir() and os.access(d, os.W_OK)), None)
    if base is None:
        pytest.skip("no writable system directory outside /tmp for the canary")
    root = Path(tempfile.mkdtemp(prefix="codegen_eval_unpriv_", dir=base))
    root.chmod(0o755)
    canary = root / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("canary\n")
    if IS_ROOT:
        for path in (canary, canary / "keep.txt"):
            os.chown(path, TEST_UID, TEST_UID)
    (root / "hostile.py").write_text(
        f"KILL_PARENT, HOLD, NEED = {KILL_PARENT!r}, {HOLD!r}, {NEED!r}\n" + HOSTILE
    )
    (root / "launch.py").write_text(LAUNCHER)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_hostile(workdir: Path) -> dict[str, Any]:
    canary = str(workdir / "canary")
    script = [sys.executable, str(workdir / "hostile.py"), canary]
    if IS_ROOT:
        needs = json.dumps(_exposures(_needed_python_dirs()))
        command = [sys.executable, str(workdir / "launch.py"), str(TEST_UID), needs, *script]
    else:
        command = script
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    proc = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results(workdir: Path) -> dict[str, Any]:
    refusal = _userns_refusal()
    if refusal is not None:
        pytest.skip(f"unprivileged user namespaces are disabled here ({refusal})")
    out = run_hostile(workdir)
    if out["userns_probe"] != 0:
        errno = out["userns_probe"] - 100
        pytest.skip(f"this kernel refuses unshare(CLONE_NEWUSER) to an unprivileged user ({errno})")
    return out


def test_runs_unprivileged_in_a_user_namespace(results: dict[str, Any]) -> None:
    assert results["uid"] != 0
    text = " | ".join(results["protections"])
    if "userns" not in text:  # the kernel refused at run time: say why, do not pass quietly
        pytest.fail(f"no user namespace for an unprivileged user: {text}")
    for part in ("netns", "pidns", "read-only file system", "tmpfs /tmp"):
        assert part in text, text


def test_fork_bomb_is_contained(results: dict[str, Any]) -> None:
    status, reason, _ = results["fork_bomb"]
    assert status in ("timeout", "crashed", "failed"), reason
    assert results["left_after_bomb"] <= 0


def test_network_is_blocked(results: dict[str, Any]) -> None:
    status, reason, _ = results["network"]
    assert status == "failed" and "unreachable" in reason.lower(), reason


def test_writes_outside_the_workdir_fail(results: dict[str, Any], workdir: Path) -> None:
    for status, reason, _ in results["writes"]:
        assert status == "failed", reason
        assert "read-only" in reason.lower() or "permission" in reason.lower(), reason
    canary = workdir / "canary"
    assert sorted(p.name for p in canary.iterdir()) == ["keep.txt"]
    assert (canary / "keep.txt").read_text() == "canary\n"
    assert (canary.stat().st_mode & 0o777) == 0o755


def test_killing_the_parent_is_contained(results: dict[str, Any]) -> None:
    assert results["kill_parent"][0] == "crashed"
    assert results["after_kill"][0] == "passed"


def test_forgeries_fail_unprivileged(results: dict[str, Any]) -> None:
    assert results["forgery"][0] != "passed"
    assert results["exit0"][0] != "passed" and "exit_before_checks" in results["exit0"][2]


def test_two_pools_do_not_share_process_limits(results: dict[str, Any]) -> None:
    status, reason, _ = results["second_pool"]
    assert status == "passed", reason
    assert results["holder"][0] == "passed", results["holder"]
