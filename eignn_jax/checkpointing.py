"""Orbax checkpoints holding the train state (params, optimiser state, step) and run metadata."""

from __future__ import annotations

import pathlib
from typing import Any

import orbax.checkpoint as ocp


class CheckpointManager:
    """Saves ``(state, metadata)`` per epoch and restores the latest pair.

    Orbax writes each checkpoint to a temporary directory and renames it when complete, so a
    run killed mid-save leaves the previous checkpoint as the latest one.
    """

    def __init__(self, directory: pathlib.Path | str, max_to_keep: int = 2):
        self.directory = pathlib.Path(directory).resolve()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False),
            item_names=("state", "metadata"))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, metadata: dict) -> None:
        self._manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), metadata=ocp.args.JsonSave(metadata)))
        self._manager.wait_until_finished()

    def restore_metadata(self, step: int | None = None) -> dict | None:
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        restored = self._manager.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
        return dict(restored.metadata)

    def restore_latest(self, template: Any) -> tuple[Any, dict] | None:
        """(state shaped like ``template``, metadata) of the latest checkpoint, or None."""
        step = self.latest_step()
        if step is None:
            return None
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(template), metadata=ocp.args.JsonRestore()))
        return restored.state, dict(restored.metadata)

    def close(self) -> None:
        self._manager.close()
