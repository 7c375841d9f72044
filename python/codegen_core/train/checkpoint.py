"""Training checkpoints with orbax: state, loader state and config, one directory per step.

A checkpoint holds the trainer state (``{"params", "opt_state", "step"}``: any pytree of
arrays) through orbax's ``StandardSave``, and the loader state and resolved config as JSON.
Saves are asynchronous (the arrays are copied to host before :meth:`Checkpointer.save`
returns; the files are written in the background) and atomic: orbax writes each step into a
temporary directory and renames it to ``<step>`` only once every process has finished, so a
process killed mid-save leaves a temporary directory that :meth:`latest_step` ignores (and a
new :class:`Checkpointer` deletes), never a half-written ``<step>``
(``tests/train/test_checkpoint.py`` kills a process mid-save to check this). Old steps
beyond ``keep`` are renamed away before they are deleted, so a kill during a deletion
cannot leave a half-deleted step behind either.

:meth:`Checkpointer.restore` takes the abstract state *for the current mesh* (shapes, dtypes
and shardings), so a checkpoint written on one mesh or process count loads onto another:
orbax reads each device's shard straight from the stored arrays.

Every process of a multi-process run creates the same :class:`Checkpointer` on the same
directory of a shared file system (NFS, a gcsfuse mount, ...) and calls ``save``/``restore``
with the same arguments; orbax coordinates them. Process 0 deletes old steps.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

__all__ = ["CheckpointError", "Checkpointer", "abstract_like"]

_ITEMS = ("state", "loader", "config")
_COMMIT_FILE = "commit_success.txt"  # orbax writes it into a step just before the rename
_TRASH_PREFIX = ".deleting-"  # a step renamed out of the way before it is deleted


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, corrupt or does not fit the given state."""


def abstract_like(tree: Any) -> Any:
    """``jax.ShapeDtypeStruct`` (with sharding) for every array leaf of ``tree``."""

    def leaf(x: Any) -> Any:
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return x

    return jax.tree.map(leaf, tree)


class Checkpointer:
    """Save and restore training checkpoints under ``directory`` (see the module doc)."""

    def __init__(self, directory: str | Path, *, keep: int = 3, async_save: bool = True) -> None:
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an integer >= 1 (checkpoints kept), got {keep!r}")
        if "://" in str(directory):
            raise ValueError(
                f"checkpoint directory {directory}: URLs are not supported; every process "
                "needs the same directory on a (shared) file system, e.g. an NFS or gcsfuse mount"
            )
        self.directory = Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(f"checkpoint directory {self.directory} is not a directory")
        self.keep = keep
        self.async_save = async_save
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,  # keep-last-N is done here, atomically (see _collect_garbage)
            create=True,
            cleanup_tmp_directories=True,  # drop what a killed save left behind
            enable_async_checkpointing=async_save,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=_ITEMS)
        self._closed = False
        self._saved = False  # keep-last-N prunes only after this object has saved
        self._collect_garbage()  # only the leftovers of killed deletions, here

    # ---- queries ---------------------------------------------------------------------
    def all_steps(self) -> list[int]:
        """Steps with a complete checkpoint, ascending.

        Read from the directory itself (not orbax's cache, which other processes' saves
        and deletions make stale): a step counts once its directory ``<step>`` exists
        (orbax renames it into place last) and holds orbax's commit file.
        """
        if not self.directory.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in self.directory.iterdir()
            if p.name.isdigit() and (p / _COMMIT_FILE).is_file()
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None when there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def _step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def _collect_garbage(self) -> None:
        """Delete all but the newest ``keep`` complete checkpoints (process 0 only).

        Orbax's own ``max_to_keep`` deletes a step directory in place, so a kill during the
        deletion leaves a ``<step>`` with some items gone that still lists as a checkpoint
        (the SIGKILL test caught exactly that). Here a step is first renamed out of the
        step namespace (atomic), then deleted; leftovers of killed deletions go next time.
        Nothing is pruned before this object has saved, so opening a run's checkpoints to
        read (export, an older step) never deletes any.
        """
        if jax.process_index() != 0 or not self.directory.is_dir():
            return
        steps = self.all_steps() if self._saved else []
        for step in steps[: max(0, len(steps) - self.keep)]:
            self._step_dir(step).replace(self.directory / f"{_TRASH_PREFIX}{step}")
        for trash in sorted(self.directory.glob(f"{_TRASH_PREFIX}*")):
            shutil.rmtree(trash, ignore_errors=True)

    # ---- save ------------------------------------------------------------------------
    def save(
        self,
        step: int,
        state: Any,
        *,
        loader_state: Mapping[str, Any],
        config: Mapping[str, Any],
        force: bool = False,
    ) -> None:
        """Start saving ``state`` (and the JSON ``loader_state``/``config``) as ``step``.

        Returns once the arrays are copied off the devices; the files are written in the
        background (call :meth:`wait` to block). A step that already has a checkpoint is
        left as it is. ``force`` is passed to orbax (save even off its schedule).
        """
        self._check_open()
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"checkpoint step must be an integer >= 0, got {step!r}")
        for name, value in (("loader_state", loader_state), ("config", config)):
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"{name} must be JSON-serialisable: {exc}") from exc
        self._collect_garbage()
        # orbax's own list (steps on disk at start, and every save since, finished or not):
        # every process has made the same calls, so every process takes the same branch
        if step in self._manager.all_steps():
            return
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            loader=ocp.args.JsonSave(dict(loader_state)),
            config=ocp.args.JsonSave(dict(config)),
        )
        saved = self._manager.save(step, args=args, force=force)
        self._saved = self._saved or saved
        if saved and not self.async_save:
            self.wait()

    def wait(self) -> None:
        """Block until every started save is on disk and finalised."""
        self._manager.wait_until_finished()
        self._collect_garbage()

    def close(self) -> None:
        """Finish pending saves and release orbax's resources (idempotent)."""
        if self._closed:
            return
        self.wait()
        self._manager.close()
        self._closed = True

    def __enter__(self) -> Checkpointer:  # noqa: PYI034 - typing.Self needs 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise CheckpointError(f"the checkpointer of {self.directory} is closed")

    # ---- restore ---------------------------------------------------------------------
    def restore(
        self, abstract_state: Any, *, step: int | None = None
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """``(state, loader_state, config)`` of ``step`` (default: the latest complete one).

        ``abstract_state`` is a pytree like the saved state whose leaves are
        ``jax.ShapeDtypeStruct`` with a ``sharding`` on the current mesh (or arrays, whose
        shape, dtype and sharding are used): the restored arrays get those shardings,
        whatever mesh or process count wrote the checkpoint.
        """
        self._check_open()
        self.wait()
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"no complete checkpoint in {self.directory}")
            step = steps[-1]
        elif step not in steps:
            raise CheckpointError(
                f"no complete checkpoint for step {step} in {self.directory} "
                f"(complete steps: {steps or 'none'})"
            )
        abstract = abstract_like(abstract_state)
        missing = [
            jax.tree_util.keystr(path)
            for path, leaf in jax.tree_util.tree_leaves_with_path(abstract)
            if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None
        ]
        if missing:
            raise ValueError(
                f"abstract_state leaves need a sharding for the current mesh; missing at "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
            )
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            loader=ocp.args.JsonRestore(),
            config=ocp.args.JsonRestore(),
        )
        where = self._step_dir(step)
        try:
            self._manager.reload()  # the step may come from another process or run
            restored = self._manager.restore(step, args=args)
        except Exception as exc:  # orbax/tensorstore raise many types; name the place
            raise CheckpointError(
                f"cannot restore checkpoint step {step} from {where}: {type(exc).__name__}: {exc}"
            ) from exc
        loader_state = restored["loader"]
        config = restored["config"]
        if not isinstance(loader_state, dict) or not isinstance(config, dict):
            raise CheckpointError(
                f"checkpoint {where} has no loader state or config (is it a trainer checkpoint?)"
            )
        return restored["state"], loader_state, config
