"""Orbax checkpoints holding the train state (params, optimiser state, step) and run metadata,
and the lock that keeps two training processes out of one run directory."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pathlib
import threading
import warnings
from typing import Any, Callable, Iterator

import jax
import orbax.checkpoint as ocp

# What a step folder must hold to be restorable: each item's folder with the file its
# handler reads first (the pytree's structure; the JSON document).
_REQUIRED_FILES = {"state": "_METADATA", "metadata": "metadata"}
# Suffix of an incomplete step folder set aside; orbax does not take the name for a step.
INCOMPLETE_SUFFIX = ".incomplete"


class IncompleteCheckpointWarning(UserWarning):
    """A step folder of a checkpoint directory lacks parts of its checkpoint and is skipped."""


def _warn(message: str) -> None:
    # Points at the code that opened the manager (_warn ← _scan ← __init__ ← caller).
    warnings.warn(message, IncompleteCheckpointWarning, stacklevel=4)


class CheckpointManager:
    """Saves ``(state, metadata)`` per epoch and restores the latest pair.

    Orbax writes each checkpoint to a temporary directory and renames it when complete, so a
    run killed mid-save leaves the previous checkpoint as the latest one. A step folder that
    lost parts afterwards (deleted by hand, a partial copy of a run) is *incomplete*: it is
    skipped, and :meth:`latest_step`, :meth:`restore_latest` and :meth:`restore_metadata`
    use the newest complete step. A writable manager also renames such folders to
    ``<step>.incomplete`` so that the run can save that step again (orbax refuses to save a
    step not newer than the latest one on disk). Each skipped step is reported once, through
    ``log`` (default: an :class:`IncompleteCheckpointWarning`), and kept in ``skipped``.

    directory: the checkpoint directory (e.g. ``workdir/checkpoints``).
    create: True opens it for training: it is created if missing, and :meth:`save` writes.
      False opens an existing directory read-only (evaluation, prediction): nothing is created
      or renamed, :meth:`save` raises, and a missing directory raises FileNotFoundError
      naming it (a mistyped ``--workdir`` must not leave empty folders behind).
    log: receives one line per skipped step.
    """

    def __init__(self, directory: pathlib.Path | str, max_to_keep: int = 2, *, create: bool = True,
                 log: Callable[[str], None] | None = None):
        self.directory = pathlib.Path(directory).resolve()
        self.writable = create
        if not create and not self.directory.is_dir():
            raise FileNotFoundError(f"no checkpoint directory {self.directory}")
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=create, enable_async_checkpointing=False),
            item_names=tuple(_REQUIRED_FILES))
        self.skipped: dict[int, str] = {}   # step → what is missing
        self._complete: list[int] = []      # complete steps, oldest first
        self._scan(log or _warn)

    def _missing(self, step: int) -> str | None:
        """What step folder ``step`` lacks to be restorable, or None if it is complete."""
        folder = self._step_folder(step)
        for item, filename in _REQUIRED_FILES.items():
            if not (folder / item).is_dir():
                return f"no {item}/ folder"
            if not (folder / item / filename).is_file():
                return f"no {item}/{filename}"
        return None

    def _step_folder(self, step: int) -> pathlib.Path:
        return pathlib.Path(self._manager.directory) / str(step)

    def _scan(self, log: Callable[[str], None]) -> None:
        steps = sorted(self._manager.all_steps())
        # Every process decides from the same folders before any of them is renamed.
        missing = {step: self._missing(step) for step in steps}
        self.skipped = {step: why for step, why in missing.items() if why is not None}
        self._complete = [step for step in steps if missing[step] is None]
        renamed = self._set_aside(sorted(self.skipped)) if self.writable else {}
        latest = self._complete[-1] if self._complete else None
        for step, why in sorted(self.skipped.items(), reverse=True):
            action = f"renamed to {renamed[step]}" if step in renamed else "skipped"
            fallback = f"the latest complete step is {latest}" if latest is not None else "no complete step is left"
            log(f"{self._step_folder(step)}: incomplete checkpoint ({why}), {action}; {fallback}")

    def _set_aside(self, steps: list[int]) -> dict[int, str]:
        """Renames incomplete step folders out of orbax's sight (by the first process only);
        returns step → new folder name (on the first process)."""
        several = jax.process_count() > 1
        if several:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("checkpointing: incomplete steps found")
        renamed = {}
        if jax.process_index() == 0:
            for step in steps:
                target = self._step_folder(step).with_name(f"{step}{INCOMPLETE_SUFFIX}")
                k = 1
                while target.exists():   # set aside before, in an earlier run
                    k += 1
                    target = target.with_name(f"{step}{INCOMPLETE_SUFFIX}-{k}")
                os.rename(self._step_folder(step), target)
                renamed[step] = target.name
        if several:
            multihost_utils.sync_global_devices("checkpointing: incomplete steps set aside")
        if steps:
            self._manager.reload()
        return renamed

    def latest_step(self) -> int | None:
        """The newest complete step, or None."""
        return self._complete[-1] if self._complete else None

    def save(self, step: int, state: Any, metadata: dict) -> None:
        if not self.writable:
            raise ValueError(f"{self.directory} was opened read-only (create=False); cannot save")
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(metadata)))
        self._manager.wait_until_finished()
        # Orbax may have deleted old steps (max_to_keep), or skipped a step not newer than its latest.
        self._complete = sorted(set(self._complete + [step]) & set(self._manager.all_steps()))
        if step in self._complete:
            self.skipped.pop(step, None)   # saved again after its incomplete folder was set aside

    def _checked_step(self, step: int | None) -> int | None:
        if step is None:
            return self.latest_step()
        if step in self.skipped:
            raise ValueError(f"{self._step_folder(step)}: incomplete checkpoint ({self.skipped[step]})")
        return step

    def _restore(self, step: int, **items) -> Any:
        try:
            return self._manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as error:  # orbax/tensorstore raise many types for a damaged folder
            raise ValueError(f"{self._step_folder(step)}: cannot restore checkpoint "
                             f"({type(error).__name__}: {error})") from error

    def restore_metadata(self, step: int | None = None) -> dict | None:
        """Metadata of ``step`` (default: the newest complete step), or None if there is none.

        Raises ValueError naming the step folder if it is incomplete or cannot be read.
        """
        step = self._checked_step(step)
        if step is None:
            return None
        return dict(self._restore(step, metadata=ocp.args.JsonRestore()).metadata)

    def restore_latest(self, template: Any) -> tuple[Any, dict] | None:
        """(state shaped like ``template``, metadata) of the newest complete step, or None.

        Raises ValueError naming the step folder if it cannot be read (e.g. a damaged array
        file, or a template of other shapes).
        """
        step = self.latest_step()
        if step is None:
            return None
        restored = self._restore(step, state=ocp.args.StandardRestore(template), metadata=ocp.args.JsonRestore())
        return restored.state, dict(restored.metadata)

    def close(self) -> None:
        self._manager.close()


# ----------------------------------------------------------------------------- workdir lock

_LOCK_NAME = ".lock"
# Locks this process holds: lock file → the thread holding it. An flock belongs to an open
# file, so a second open() and flock of the same file in this process would fail against the
# first; nested use by one thread (run_training around train) re-enters instead.
_held: dict[pathlib.Path, int] = {}
_held_guard = threading.Lock()


def _refuse(workdir: pathlib.Path, path: pathlib.Path, holder: str) -> ValueError:
    return ValueError(f"another process{f' (pid {holder})' if holder.isdigit() else ''} is training in "
                      f"{workdir} ({path} is locked)")


@contextlib.contextmanager
def workdir_lock(workdir: pathlib.Path | str) -> Iterator[pathlib.Path]:
    """Holds an exclusive ``fcntl.flock`` on ``workdir/.lock`` (creating ``workdir``) while training.

    Two processes training in one run directory would interleave checkpoints and metrics;
    the second one to arrive raises ValueError "another process is training in <workdir>"
    (with that process's pid) instead of waiting. The lock goes with the process, so a
    killed run leaves no stale lock; the file stays (deleting it would let a third process
    lock a new file while the second still holds the old one). Re-entrant for the thread
    holding it. Yields the lock file's path.
    """
    workdir = pathlib.Path(workdir).resolve()
    path = workdir / _LOCK_NAME
    thread = threading.get_ident()
    with _held_guard:
        holder = _held.get(path)
    if holder == thread:
        yield path
        return
    if holder is not None:
        raise _refuse(workdir, path, str(os.getpid()))

    workdir.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise _refuse(workdir, path, handle.read().strip()) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        with _held_guard:
            _held[path] = thread
        try:
            yield path
        finally:
            with _held_guard:
                del _held[path]
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
