"""Equilibrium structures for configurations that lack them: inherent structures and cage states.

Glue between the file layout (:mod:`eignn_jax.dataset`) and the physics
(:mod:`eignn_jax.physics.minimise` for inherent structures, :mod:`eignn_jax.physics.cage` for cage
states). Results are stored wrapped into the box, [−L/2, L/2), in float64, like the
positions of GlassBench files but without rounding the minimum away.

Every parameter that made a structure is reported (:class:`EquilibriumReport`) and, for
files written with structures, kept beside them in a record (:data:`RECORD_NAME`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import re
import time
from typing import Callable, Sequence

import jax
import numpy as np

from eignn_jax import dataset, files
from eignn_jax.physics import periodic

KINDS = ("inherent", "cage")
_TEMPERATURE_IN_NAME = re.compile(r"T(\d+(?:\.\d+)?)_")


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
    meta = dataset.folder_meta(path.parent) if value is None else None
    if meta is not None:
        value, source = meta.get("T"), str(path.parent / dataset.META_NAME)
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
    """How :func:`compute` made one structure.

    kind: 'inherent' or 'cage'.
    settings: every parameter that determined the structure, JSON-ready: ``method``
      ('lbfgs' or 'fire' for ``minimise.inherent_structure``, 'cage_monte_carlo' for
      ``cage.cage_state``) and ``config``, every field of the minimiser's or the sampler's
      config dataclass (a cage state's temperature and seed included);
      :func:`add_structure` adds ``temperature_source``.
    summary: how the run went (energy per particle in ε, max |F| in ε/σ and iterations;
      acceptance, sweeps and rejected cage moves), for logs.
    seconds: wall time of the computation.
    """

    kind: str
    settings: dict
    summary: dict
    seconds: float


def compute(config: dataset.Configuration, kind: str, *, temperature: float | None = None,
            seed: int = 0) -> tuple[np.ndarray, EquilibriumReport]:
    """Equilibrium positions [N, 3] float64 (σ, wrapped) of ``kind`` and how they were made.

    temperature: ε/k_B, required for cage states (the Monte Carlo runs at the
      configuration's T).
    seed: the cage sampler's seed (its random key is ``PRNGKey(seed)``).
    Raises ValueError for an unknown kind or a cage state without a temperature, and
    DataError naming the file when the minimiser or the sampler fails on it (e.g.
    overlapping particles, a box too small for the interaction range).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown equilibrium kind {kind!r}; expected one of {KINDS}")
    if kind == "cage" and temperature is None:
        raise ValueError(f"{config.path}: a cage state needs the temperature: pass --temperature, "
                         "or keep a meta.json with key T beside the file")
    started = time.perf_counter()
    try:
        result, settings, summary = _compute(config, kind, temperature, seed)
    except (ValueError, RuntimeError) as error:
        # The physics modules know arrays, not files: name the file and the field here.
        raise dataset.DataError(config.path or "<in-memory configuration>", "initial_positions",
                                f"computing its {kind} structure failed: {error}") from error
    report = EquilibriumReport(kind=kind, settings=settings, summary=summary,
                               seconds=round(time.perf_counter() - started, 2))
    return periodic.wrap(np.asarray(result.positions, np.float64), config.box), report


def _compute(config: dataset.Configuration, kind: str, temperature: float | None, seed: int):
    """(the physics result, settings, summary) of one structure; see :class:`EquilibriumReport`."""
    if kind == "inherent":
        from eignn_jax.physics import minimise
        # The default minimiser, passed explicitly so that every field of it is recorded.
        minimiser = minimise.METHODS[minimise.DEFAULT_METHOD]()
        result = minimise.inherent_structure(config.positions, config.types, config.box, minimiser)
        return result, {"method": result.method, "config": dataclasses.asdict(minimiser)}, {
            "energy_per_particle": result.energy_per_particle, "max_force": result.max_force,
            "iterations": result.iterations}
    from eignn_jax.physics import cage
    sampler = cage.CageConfig(temperature=temperature, seed=seed)
    result = cage.cage_state(config.positions, config.types, config.box, sampler,
                             key=jax.random.PRNGKey(seed))
    return result, {"method": "cage_monte_carlo", "config": dataclasses.asdict(sampler)}, {
        "temperature": temperature, "acceptance": result.acceptance, "sweeps": result.sweeps,
        "rejected_cage_moves": result.rejected_cage_moves}


def add_structure(config: dataset.Configuration, kind: str, path: pathlib.Path, *,
                  temperature: float | None = None, seed: int = 0,
                  log: Callable[[str], None] = print) -> tuple[dataset.Configuration, EquilibriumReport]:
    """``config`` with its ``kind`` structure computed by :func:`compute`, and the report.

    path: the file the configuration came from; a cage state runs at ``temperature``
      (ε/k_B) if given, else at :func:`temperature_of` ``path``. The temperature and its
      source are logged, added to the report's settings (``temperature_source``) and
      stored with the structure (extra key ``cage_temperature``).
    Raises as :func:`temperature_of` and :func:`compute`.
    """
    source = None
    if kind == "cage":
        temperature, source = temperature_of(path, temperature)
        log(f"{path.name}: cage state at T = {temperature} (from {source})")
    positions, report = compute(config, kind, temperature=temperature, seed=seed)
    config = with_equilibrium(config, kind, positions)
    if kind == "cage":
        config = dataclasses.replace(config, extras={**config.extras, "cage_temperature": np.float64(temperature)})
        report = dataclasses.replace(report, settings={**report.settings, "temperature_source": source})
    return config, report


def with_equilibrium(config: dataset.Configuration, kind: str, positions: np.ndarray) -> dataset.Configuration:
    return dataclasses.replace(config, **{kind: positions})


def has_equilibrium(config: dataset.Configuration, kind: str) -> bool:
    return (config.inherent if kind == "inherent" else config.cage) is not None


# ----------------------------------------------------------------------------- record

# Beside files written with computed structures: how each of those structures was made.
RECORD_NAME = "equilibrate.json"


def read_record(folder: pathlib.Path | str, names: Sequence[str] | None = None) -> dict | None:
    """``folder``'s record (:data:`RECORD_NAME`), or None if it has none.

    The record is ``{"settings": {id: settings}, "files": {file name: {"source": the
    input's path, kind: settings id, ...}}, "source_meta": {input folder: its meta.json}}``
    (settings as in :class:`EquilibriumReport`, shared by the files they made).
    names: keep only the entries of these files and what they refer to; None if none of
      them has an entry.
    Raises DataError naming the record if it is not such a JSON object.
    """
    path = pathlib.Path(folder) / RECORD_NAME
    record = dataset.read_json_object(path)
    if record is None:
        return None
    if not (isinstance(record.get("files"), dict) and isinstance(record.get("settings"), dict)):
        raise dataset.DataError(path, dataset.FILE_FIELD, "not an equilibrate record (no 'files' and 'settings')")
    for name, entry in record["files"].items():
        if not (isinstance(entry, dict) and "source" in entry
                and all(entry[kind] in record["settings"] for kind in KINDS if kind in entry)):
            raise dataset.DataError(path, dataset.FILE_FIELD, f"the entry of {name} names no source or unknown settings")
    if names is None:
        return record
    entries = {name: record["files"][name] for name in names if name in record["files"]}
    return _pruned({**record, "files": entries}) if entries else None


def recorded_settings(path: pathlib.Path | str) -> dict[str, dict]:
    """kind → settings of the structures of file ``path`` that its folder's record knows ({} if none)."""
    path = pathlib.Path(path)
    record = read_record(path.parent, [path.name])
    if record is None:
        return {}
    entry = record["files"][path.name]
    return {kind: record["settings"][entry[kind]] for kind in KINDS if kind in entry}


def record_structures(target: pathlib.Path, source: pathlib.Path, structures: dict[str, dict]) -> None:
    """Records beside ``target`` that its structures (kind → settings) were made from
    ``source``, replacing the file's earlier entry; the record is rewritten atomically.

    Written before ``target`` itself: a run killed between the two leaves an entry for
    structures still missing from the file, which the next run computes and records again.
    Raises DataError for an existing record that is not one, OSError naming it if it
    cannot be written.
    """
    target, source = pathlib.Path(target), pathlib.Path(source)
    record = read_record(target.parent) or {"settings": {}, "files": {}}
    entry = {"source": str(source.resolve())}
    for kind, settings in structures.items():
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
        entry[kind] = f"{settings['method']}-{digest}"
        record["settings"][entry[kind]] = settings
    record["files"][target.name] = entry
    meta = dataset.folder_meta(source.parent)
    if meta is not None:
        record["source_meta"] = {**record.get("source_meta", {}), str(source.parent.resolve()): meta}
    files.atomic_write(target.parent / RECORD_NAME, json.dumps(_pruned(record), indent=1, sort_keys=True) + "\n")


def _pruned(record: dict) -> dict:
    """``record`` without the settings and source folders that none of its files refers to."""
    used = {entry[kind] for entry in record["files"].values() for kind in KINDS if kind in entry}
    folders = {str(pathlib.Path(entry["source"]).parent) for entry in record["files"].values()}
    return {**record, "settings": {k: v for k, v in record["settings"].items() if k in used},
            "source_meta": {k: v for k, v in record.get("source_meta", {}).items() if k in folders}}
