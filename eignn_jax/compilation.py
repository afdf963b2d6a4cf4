"""JAX's persistent compilation cache, turned on by the command-line entry points.

XLA compiles the paper-size train step in 6–10 s on 2 CPU cores, every process. With the
persistent cache, the first process writes each compiled executable to disk, keyed by the
program, the jax / jaxlib versions, the backend and the compile options, and a later
process on the same machine loads it instead of compiling.

XLA's cache does not skip the work before compilation: tracing the paper-size train step
through flax and e3nn takes 1.6–1.8 s and lowering it 0.3–0.4 s on 2 CPU cores, every
process. The *traced-program cache* (:func:`load_or_export`, used by
``training.TracedFunction`` when given a ``program_key``) keeps the traced program itself,
serialised with ``jax.export`` in the ``traced/`` subdirectory of the same cache, so that a
later process goes straight from the file to XLA's cache.

Importing this module changes nothing: library users choose their own jax configuration,
and only the entry points (``experiments.*``) call :func:`enable_persistent_cache`, which
turns on both caches.

    from eignn_jax import compilation
    compilation.enable_persistent_cache()         # before the first jit compilation

Where the cache goes (:func:`cache_directory`): ``$EIGNN_JAX_COMPILATION_CACHE`` if it names a
directory, none if it is ``0`` (or ``off``, ``false``, ``no``), else
``$XDG_CACHE_HOME/eignn_jax/xla`` (``~/.cache/eignn_jax/xla`` without XDG_CACHE_HOME).

Source: JAX, "Persistent compilation cache",
https://docs.jax.dev/en/latest/persistent_compilation_cache.html (options
``jax_compilation_cache_dir``, ``jax_persistent_cache_min_compile_time_secs``,
``jax_persistent_cache_min_entry_size_bytes``; names checked against jax 0.10).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import pickle
import platform
import struct
import tempfile
import warnings
from typing import Any, Callable, Iterator, Mapping, Sequence

ENVIRONMENT_VARIABLE = "EIGNN_JAX_COMPILATION_CACHE"
# Values of ENVIRONMENT_VARIABLE that turn the cache off (case-insensitive).
OFF_VALUES = frozenset({"0", "off", "false", "no", "none"})
# Values that mean "on, at the default place" (an empty variable counts as unset).
ON_VALUES = frozenset({"", "1", "on", "true", "yes"})

# Programs that took at least this long to compile are written: all of them. Besides the
# train step (~10 s of compilation), initialising a paper-size model runs ~300 eager
# operations, each compiled on its own (~40 ms each, ~12 s CPU in all, on 2 CPU cores); from
# the cache they load in ~3 s. They cost ~5 KB each on disk. JAX's default (1 s) would
# keep only the train step.
MIN_COMPILE_TIME_S = 0.0

# JAX's monitoring events of the persistent cache (jax._src.compiler, compilation_cache).
_EVENT_PREFIX = "/jax/compilation_cache/"

_warned: set[str] = set()

# Where traced programs are kept (a subdirectory of the XLA cache), or None: set by
# enable_persistent_cache, like JAX's own cache directory, so that library users who do not
# call it are unaffected.
TRACED_SUBDIRECTORY = "traced"
_traced_directory: pathlib.Path | None = None


def default_cache_directory(environ: Mapping[str, str] = os.environ) -> pathlib.Path:
    """``$XDG_CACHE_HOME/eignn_jax/xla``, or ``~/.cache/eignn_jax/xla`` when XDG_CACHE_HOME is
    unset, empty or relative (the XDG Base Directory specification ignores relative paths)."""
    base = environ.get("XDG_CACHE_HOME", "")
    root = pathlib.Path(base) if base and os.path.isabs(base) else pathlib.Path.home() / ".cache"
    return root / "eignn_jax" / "xla"


def cache_directory(environ: Mapping[str, str] = os.environ) -> pathlib.Path | None:
    """Where the entry points keep compiled programs, from ``environ``; None: no cache.

    ``EIGNN_JAX_COMPILATION_CACHE``: unset, empty, ``1``, ``on``, ``true`` or ``yes`` → the
    default directory (:func:`default_cache_directory`); ``0``, ``off``, ``false``, ``no`` or
    ``none`` → None; anything else is a directory (``~`` expanded).
    """
    value = environ.get(ENVIRONMENT_VARIABLE, "").strip()
    if value.lower() in OFF_VALUES:
        return None
    if value.lower() in ON_VALUES:
        return default_cache_directory(environ)
    return pathlib.Path(value).expanduser()


def writable_directory(directory: pathlib.Path) -> str | None:
    """Create ``directory`` (and its parents) and check that a file can be written in it.

    Returns None if it can, else the reason (the OSError's message). The check writes and
    removes one temporary file, because a directory's permission bits do not tell (read-only
    mounts, ACLs, full disks).
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as error:
        return f"{type(error).__name__}: {error}"
    return None


def _warn_once(directory: pathlib.Path, reason: str) -> None:
    if str(directory) in _warned:
        return
    _warned.add(str(directory))
    warnings.warn(f"compilation cache {directory} is not writable ({reason}); continuing without it "
                  f"(set {ENVIRONMENT_VARIABLE}=DIR for another place, or =0 to turn it off)",
                  RuntimeWarning, stacklevel=3)


def enable_persistent_cache(directory: str | os.PathLike | None = None,
                            min_compile_time_s: float = MIN_COMPILE_TIME_S,
                            traced_programs: bool = True) -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache in ``directory`` for this process.

    directory: where compiled programs are kept; None: :func:`cache_directory` of the
      environment (which may say that there is to be no cache).
    min_compile_time_s: only programs that took at least this many seconds to compile are
      written (``jax_persistent_cache_min_compile_time_secs``); every program is looked up.
    traced_programs: also turn on the traced-program cache in ``<directory>/traced``
      (:func:`traced_program_directory`); False leaves it as it was (off unless turned on).

    Returns the cache directory, or None when the cache stays off: turned off by the
    environment, or ``directory`` cannot be created or written, in which case a
    RuntimeWarning is issued once per directory and the process compiles as usual (it
    never raises for that). Entries of any size are written
    (``jax_persistent_cache_min_entry_size_bytes = -1``).

    Call it before the first compilation: JAX decides once per process, at the first
    compilation, whether the cache is used. The cache is trusted code: anyone who can write
    to the directory can make this process run arbitrary code, so it is per user.
    """
    path = cache_directory() if directory is None else pathlib.Path(directory).expanduser()
    if path is None:
        return None
    reason = writable_directory(path)
    if reason is not None:
        _warn_once(path, reason)
        return None
    import jax     # here, so that importing this module stays free of jax

    path = path.resolve()
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    if traced_programs:
        global _traced_directory
        _traced_directory = path / TRACED_SUBDIRECTORY
    return path


def traced_program_directory() -> pathlib.Path | None:
    """The traced-program cache of this process (``<cache>/traced``), or None when
    :func:`enable_persistent_cache` has not turned the caches on."""
    return _traced_directory


@contextlib.contextmanager
def cache_events() -> Iterator[collections.Counter]:
    """Count JAX's persistent-cache monitoring events while the block runs.

    Yields a Counter keyed by the event's last component, filled in as events arrive:
    ``compile_requests_use_cache`` (compilations that looked in the cache),
    ``cache_hits`` (executables loaded from it instead of compiled), ``cache_misses``
    (executables compiled and written to it) and, once per process at its first
    compilation, ``tasks_using_cache`` or ``task_disabled_cache``. Programs that compiled
    faster than the threshold are looked up but neither hit nor written.
    Source: ``jax.monitoring`` (``register_event_listener``), event names as recorded by
    jax 0.10's ``jax._src.compiler.compile_or_get_cached``.
    """
    import jax.monitoring

    counts: collections.Counter = collections.Counter()

    def listener(event: str, **_) -> None:
        if event.startswith(_EVENT_PREFIX):
            counts[event[len(_EVENT_PREFIX):]] += 1

    jax.monitoring.register_event_listener(listener)
    try:
        yield counts
    finally:
        jax.monitoring.unregister_event_listener(listener)


# jax configuration options that change what tracing a function produces.
TRACING_OPTIONS = ("jax_enable_x64", "jax_default_matmul_precision", "jax_threefry_partitionable",
                   "jax_default_prng_impl", "jax_numpy_dtype_promotion", "jax_numpy_rank_promotion",
                   "jax_enable_custom_prng")
# Libraries whose code is traced into our programs.
TRACED_LIBRARIES = ("jax", "jaxlib", "flax", "optax", "e3nn-jax", "jraph", "numpy")
_FILE_MAGIC = b"eignn_jax traced program 1\n"


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 of the ``eignn_jax`` package's Python sources (relative paths and contents):
    any edit to the package makes every traced program of the old code unreachable."""
    root = pathlib.Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def program_fingerprint(key: str, in_tree: Any, in_types: Sequence[str]) -> str:
    """sha256 naming the traced program of a function for one input signature.

    key: what the caller promises determines the function besides this package's code
      (its configuration, e.g. the model and optimizer configs and the seed).
    in_tree, in_types: the inputs' pytree structure and their abstract types
      (``str(jax.typeof(leaf))``: dtype, shape, weak type).
    Also hashed: :func:`source_digest`, the versions of Python and of ``TRACED_LIBRARIES``,
    the ``TRACING_OPTIONS`` of jax's configuration, and the first local device's platform and kind.
    """
    import jax

    device = jax.local_devices()[0]
    parts = [key, source_digest(), platform.python_version(),
             *(f"{name}={importlib.metadata.version(name)}" for name in TRACED_LIBRARIES),
             *(f"{name}={jax.config.values.get(name)!r}" for name in TRACING_OPTIONS),
             device.platform, device.device_kind, str(in_tree), *in_types]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _encode(out_tree: Any, serialized: bytes) -> bytes:
    tree = pickle.dumps(out_tree)
    return _FILE_MAGIC + struct.pack("<Q", len(tree)) + tree + bytes(serialized)


def _decode(data: bytes) -> tuple[Any, Any]:
    """(output tree, jax.export.Exported); ValueError if ``data`` is not a whole program file."""
    from jax import export

    header = len(_FILE_MAGIC) + 8
    if not data.startswith(_FILE_MAGIC) or len(data) < header:
        raise ValueError("not a traced-program file")
    (tree_size,) = struct.unpack("<Q", data[len(_FILE_MAGIC):header])
    if len(data) < header + tree_size:
        raise ValueError("truncated traced-program file")
    # The cache directory is trusted like XLA's, which holds executable code.
    out_tree = pickle.loads(data[header:header + tree_size])
    exported = export.deserialize(bytearray(data[header + tree_size:]))
    if out_tree.num_leaves != len(exported.out_avals):
        raise ValueError("output tree and program disagree")
    return out_tree, exported


def load_or_export(fn: Callable, args: Sequence, key: str,
                   directory: pathlib.Path) -> tuple[Callable, Any, str]:
    """``fn``'s program for inputs shaped like ``args``, from ``directory`` or traced now.

    Looks for ``<directory>/<program_fingerprint>.program``; if it is missing or unreadable,
    traces ``fn`` once with ``jax.export`` and writes it there (atomically; a directory that
    cannot be written costs only the file, with one RuntimeWarning).

    Returns ``(call, out_tree, source)``: ``call(*leaves)`` runs the program on the flattened
    inputs (``jax.tree.flatten(args)`` order) and returns the flattened outputs, to be
    unflattened with ``out_tree``; it is to be jitted by the caller (donation, counting).
    ``source`` is 'loaded' (from the file), 'written' or 'traced' (tracing done, file not
    written). The program is the same StableHLO either way, so results do not depend on it.
    Source: jax.export, https://docs.jax.dev/en/latest/export/export.html.
    """
    import jax
    from jax import export

    from eignn_jax import files

    leaves, in_tree = jax.tree.flatten(tuple(args))
    in_types = [jax.typeof(leaf) for leaf in leaves]
    path = directory / f"{program_fingerprint(key, in_tree, [str(t) for t in in_types])}.program"
    try:
        data = path.read_bytes()
    except OSError:          # none yet, or no directory: trace, then try to write it below
        data = None
    if data is not None:
        try:
            out_tree, exported = _decode(data)
            return exported.call, out_tree, "loaded"
        except Exception as error:   # a damaged or foreign file is replaced, never trusted
            warnings.warn(f"traced program {path} is unreadable ({type(error).__name__}: {error}); "
                          f"tracing again", RuntimeWarning, stacklevel=2)

    trees = []

    def flat(*flat_args):
        out_leaves, out_tree = jax.tree.flatten(fn(*jax.tree.unflatten(in_tree, flat_args)))
        trees.append(out_tree)
        return out_leaves

    exported = export.export(jax.jit(flat))(
        *[jax.ShapeDtypeStruct(t.shape, t.dtype, weak_type=t.weak_type) for t in in_types])
    source = "written"
    reason = writable_directory(directory)
    if reason is None:
        try:
            files.atomic_write(path, _encode(trees[0], exported.serialize()))
        except OSError as error:
            reason = f"{type(error).__name__}: {error}"
    if reason is not None:
        source = "traced"
        _warn_once(directory, reason)
    return exported.call, trees[0], source
