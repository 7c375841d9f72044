"""Hostile programs shared by the sandbox tests as root (test_eval_sandbox) and as an
ordinary user (test_eval_unprivileged, which ships them into its helper script)."""

from __future__ import annotations

# Kills its parent, the namespace's init and its own process group.
KILL_PARENT = (
    "import os, signal\n"
    "for pid in (os.getppid(), 1):\n"
    "    try:\n"
    "        os.kill(pid, signal.SIGKILL)\n"
    "    except OSError:\n"
    "        pass\n"
    "os.killpg(0, signal.SIGKILL)\n"
)
# Holds every process it can get for a few seconds (a fork bomb that stays).
HOLD = (
    "import os, time\n"
    "for _ in range(200):\n"
    "    try:\n"
    "        if os.fork() == 0:\n"
    "            time.sleep(6)\n"
    "            os._exit(0)\n"
    "    except OSError:\n"
    "        break\n"
    "time.sleep(4)\n"
)
# Needs 10 processes: passes only if HOLD in another pool did not take its process limit.
NEED = (
    "import os, time\n"
    "pids = []\n"
    "for _ in range(10):\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        time.sleep(0.5)\n"
    "        os._exit(0)\n"
    "    pids.append(pid)\n"
    "for pid in pids:\n"
    "    os.waitpid(pid, 0)\n"
)
