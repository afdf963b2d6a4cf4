"""Equilibrium structures for configurations that lack them: inherent structures and cage states.

Glue between the file layout (:mod:`eignn_jax.dataset`) and the physics
(:mod:`eignn_jax.minimise` for FIRE inherent structures, :mod:`eignn_jax.cage` for cage
states). Results are stored wrapped into the box, [−L/2, L/2), in float64, like the
positions of GlassBench files but without rounding the minimum away.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re

import jax
import numpy as np

from eignn_jax import dataset

KINDS = ("inherent", "cage")
_TEMPERATURE_IN_NAME = re.compile(r"T(\d+(?:\.\d+)?)_")


def wrap(positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    """[N, 3] positions → the same points wrapped into [−L/2, L/2) per axis."""
    return positions - box * np.floor(positions / box + 0.5)


# Temperatures (ε/k_B) at which a Kob–Andersen configuration can be a supercooled liquid or a
# glass: a cage state sampled outside this range describes no such state.
PLAUSIBLE_TEMPERATURES = (0.1, 5.0)


def temperature_of(path: pathlib.Path | str, given: float | None = None) -> tuple[float | None, str]:
    """(temperature, where it came from) of a file: ``given`` ('--temperature'), else key ``T``
    of a ``meta.json`` beside it ('meta.json'), else its GlassBench-style name ``…T0.44_7.npz``
    ('file name'); (None, 'nowhere') when none of them says.

    Raises ValueError naming the source when the temperature is outside
    ``PLAUSIBLE_TEMPERATURES``, and DataError for a meta.json that is not JSON.
    """
    path = pathlib.Path(path)
    value, source = given, "--temperature"
    meta = path.parent / "meta.json"
    if value is None and meta.exists():
        try:
            value, source = json.loads(meta.read_text()).get("T"), str(meta)
        except json.JSONDecodeError as error:
            raise dataset.DataError(meta, "T", f"meta.json is not valid JSON ({error})") from error
    if value is None:
        match = _TEMPERATURE_IN_NAME.search(path.name)
        value, source = (float(match.group(1)), "file name") if match else (None, "nowhere")
    if value is None:
        return None, source
    low, high = PLAUSIBLE_TEMPERATURES
    if not low < float(value) < high:
        raise ValueError(f"{path}: temperature {value} (from {source}) is outside {low}-{high} ε/k_B, "
                         f"where a Kob-Andersen liquid or glass can be")
    return float(value), source


@dataclasses.dataclass(frozen=True)
class EquilibriumReport:
    """What one computation did, for progress lines and logs."""

    kind: str
    seconds: float
    summary: dict


def compute(config: dataset.Configuration, kind: str, *, temperature: float | None = None,
            seed: int = 0) -> tuple[np.ndarray, dict]:
    """Equilibrium positions [N, 3] float64 (σ, wrapped) of ``kind`` and a summary dict.

    temperature: required for cage states (the Monte Carlo runs at the configuration's T).
    Raises DataError naming the file when the minimiser or the sampler fails on it (e.g.
    overlapping particles, a box too small for the interaction range).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown equilibrium kind {kind!r}; expected one of {KINDS}")
    if kind == "cage" and temperature is None:
        raise ValueError(f"{config.path}: a cage state needs the temperature: pass --temperature, "
                         "or keep a meta.json with key T beside the file")
    try:
        result, summary = _compute(config, kind, temperature, seed)
    except (ValueError, RuntimeError) as error:
        # The physics modules know arrays, not files: name the file and the field here.
        raise dataset.DataError(config.path or "<in-memory configuration>", "initial_positions",
                                f"computing its {kind} structure failed: {error}") from error
    return wrap(np.asarray(result.positions, np.float64), config.box), summary


def _compute(config: dataset.Configuration, kind: str, temperature: float | None, seed: int):
    if kind == "inherent":
        from eignn_jax import minimise
        result = minimise.inherent_structure(config.positions, config.types, config.box)
        return result, {"energy_per_particle": result.energy_per_particle, "max_force": result.max_force,
                        "iterations": result.iterations}
    from eignn_jax import cage
    result = cage.cage_state(config.positions, config.types, config.box,
                             cage.CageConfig(temperature=temperature, seed=seed),
                             key=jax.random.PRNGKey(seed))
    return result, {"temperature": temperature, "acceptance": result.acceptance, "sweeps": result.sweeps,
                    "rejected_cage_moves": result.rejected_cage_moves}


def with_equilibrium(config: dataset.Configuration, kind: str, positions: np.ndarray) -> dataset.Configuration:
    return dataclasses.replace(config, **{kind: positions})


def has_equilibrium(config: dataset.Configuration, kind: str) -> bool:
    return (config.inherent if kind == "inherent" else config.cage) is not None
