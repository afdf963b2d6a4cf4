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

# The most disk the caches take: XLA's entries (JAX deletes the least recently used beyond
# this, ``jax_compilation_cache_max_size``) and, separately, the traced programs (the least
# recently used deleted beyond MAX_TRACED_BYTES). A paper-size model takes ~2 MB of XLA
# entries and ~0.5 MB of traced programs, so this keeps hundreds of models and code versions.
MAX_CACHE_BYTES = 2 * 2**30
MAX_TRACED_BYTES = 512 * 2**20

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
                            traced_programs: bool = True,
                            max_bytes: int = MAX_CACHE_BYTES) -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache in ``directory`` for this process.

    directory: where compiled programs are kept; None: :func:`cache_directory` of the
      environment (which may say that there is to be no cache).
    min_compile_time_s: only programs that took at least this many seconds to compile are
      written (``jax_persistent_cache_min_compile_time_secs``); every program is looked up.
    traced_programs: also turn on the traced-program cache in ``<directory>/traced``
      (:func:`traced_program_directory`); False leaves it as it was (off unless turned on).
    max_bytes: XLA's entries beyond this size are deleted, least recently used first
      (``jax_compilation_cache_max_size``; -1: no limit). The traced programs have their own
      limit, ``MAX_TRACED_BYTES``.

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
    jax.config.update("jax_compilation_cache_max_size", int(max_bytes))
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


# Packages whose code runs while our functions are traced (imported by name).
TRACED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "e3nn_jax", "jraph", "numpy", "opt_einsum",
                   "ml_dtypes", "scipy", "sympy")
_FILE_MAGIC = b"eignn_jax traced program 2\n"
_PACKAGE_ROOT = pathlib.Path(__file__).resolve().parent


def _package_files_state() -> tuple:
    """(relative path, size, modification time) of every Python file of ``eignn_jax``."""
    files = sorted(_PACKAGE_ROOT.rglob("*.py"))
    return tuple((path.relative_to(_PACKAGE_ROOT).as_posix(), status.st_size, status.st_mtime_ns)
                 for path, status in zip(files, map(os.stat, files)))


# The package's files as this process imported them (``eignn_jax/__init__`` imports this
# module first): a program is only ever named after the code that the process runs.
_IMPORTED_STATE = _package_files_state()


class Uncacheable(RuntimeError):
    """What a program would compute cannot be named with certainty: it is not to be kept."""


class SourceChanged(Uncacheable):
    """The ``eignn_jax`` sources on disk differ from those this process imported."""


@functools.lru_cache(maxsize=None)
def _digest_of(state: tuple) -> str:
    digest = hashlib.sha256()
    for relative, _, _ in state:
        digest.update(relative.encode() + b"\0" + (_PACKAGE_ROOT / relative).read_bytes() + b"\0")
    return digest.hexdigest()


def source_digest() -> str:
    """sha256 of the ``eignn_jax`` package's Python sources (relative paths and contents):
    any edit to the package makes every traced program of the old code unreachable.

    Raises SourceChanged if a file was added, removed or modified since the package was
    imported: the file contents would then not be the code this process runs.
    """
    state = _package_files_state()
    if state != _IMPORTED_STATE:
        changed = sorted({entry[0] for entry in set(state) ^ set(_IMPORTED_STATE)})
        raise SourceChanged(f"eignn_jax's sources changed since this process imported them ({', '.join(changed)})")
    return _digest_of(state)


@functools.lru_cache(maxsize=1)
def library_digest() -> str:
    """sha256 naming the installed code of ``TRACED_PACKAGES``: for each, where it is imported
    from, its version, and the path, size and modification time of each of its Python and
    extension files (a reinstall, an editable checkout or a copy earlier on the path all
    change it; ~0.1 s, once per process)."""
    import importlib.util

    digest = hashlib.sha256()
    for name in TRACED_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None:
            digest.update(f"{name}: absent\n".encode())
            continue
        try:
            version = importlib.metadata.version(name.replace("_", "-"))
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        digest.update(f"{name} {version} {spec.origin}\n".encode())
        for root in sorted(spec.submodule_search_locations or []):
            for directory, subdirectories, filenames in os.walk(root):
                subdirectories.sort()
                for filename in sorted(filenames):
                    if filename.endswith((".py", ".so", ".pyd")):
                        status = os.stat(os.path.join(directory, filename))
                        digest.update(f"{directory}/{filename} {status.st_size} {status.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def library_settings() -> list[str]:
    """The global settings of jax, flax and e3nn-jax that tracing reads (all of them: a
    setting that does not matter costs only a retrace). Raises Uncacheable if e3nn-jax's
    settings cannot be listed (it keeps them in a private table)."""
    import e3nn_jax
    import flax
    import jax
    from e3nn_jax._src import config as e3nn_config

    e3nn_names = sorted(getattr(e3nn_config, "__default_conf", {}))
    if not e3nn_names:
        raise Uncacheable("e3nn-jax's configuration cannot be listed")
    return [repr(sorted(jax.config.values.items())), repr(flax.config),
            repr([(name, e3nn_jax.config(name)) for name in e3nn_names])]


def program_fingerprint(key: str, in_tree: Any, in_types: Sequence[str]) -> str:
    """sha256 naming the traced program of a function for one input signature.

    key: what the caller promises determines the function besides the code (its
      configuration, e.g. the model and optimizer configs and the seed).
    in_tree, in_types: the inputs' pytree structure and their abstract types
      (``str(jax.typeof(leaf))``: dtype, shape, weak type).
    Also hashed: :func:`source_digest`, the Python version, :func:`library_digest`,
    :func:`library_settings`, and the first local device's platform and kind. Raises
    Uncacheable (SourceChanged) when the first or the settings cannot be trusted.
    """
    import jax

    device = jax.local_devices()[0]
    parts = [key, source_digest(), platform.python_version(), library_digest(), *library_settings(),
             device.platform, device.device_kind, str(in_tree), *in_types]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _encode(out_tree: Any, serialized: bytes) -> bytes:
    payload = pickle.dumps(out_tree)
    payload = struct.pack("<Q", len(payload)) + payload + bytes(serialized)
    return _FILE_MAGIC + hashlib.sha256(payload).digest() + payload


def _decode(data: bytes) -> tuple[Any, Any]:
    """(output tree, jax.export.Exported); ValueError if ``data`` is not a whole, intact
    program file (its sha256 checksum is checked before anything is read from it)."""
    from jax import export

    header = len(_FILE_MAGIC) + 32
    if not data.startswith(_FILE_MAGIC) or len(data) < header + 8:
        raise ValueError("not a traced-program file")
    payload = data[header:]
    if hashlib.sha256(payload).digest() != data[len(_FILE_MAGIC):header]:
        raise ValueError("checksum mismatch")
    (tree_size,) = struct.unpack("<Q", payload[:8])
    # The cache directory is trusted like XLA's, which holds executable code.
    out_tree = pickle.loads(payload[8:8 + tree_size])
    exported = export.deserialize(bytearray(payload[8 + tree_size:]))
    if out_tree.num_leaves != len(exported.out_avals):
        raise ValueError("output tree and program disagree")
    return out_tree, exported


def _warn_uncached(what: str, error: BaseException) -> None:
    if what in _warned:
        return
    _warned.add(what)
    warnings.warn(f"{what} is traced as usual, without the traced-program cache "
                  f"({type(error).__name__}: {error})", RuntimeWarning, stacklevel=3)


def load_or_export(fn: Callable, args: Sequence, key: str,
                   directory: pathlib.Path) -> tuple[Callable, Any, str] | None:
    """``fn``'s program for inputs shaped like ``args``, from ``directory`` or traced now.

    Looks for ``<directory>/<program_fingerprint>.program``; if it is missing or damaged,
    traces ``fn`` once with ``jax.export`` and writes it there (atomically; a directory that
    cannot be written costs only the file, with one RuntimeWarning).

    Returns ``(call, out_tree, source)``: ``call(*leaves)`` runs the program on the flattened
    inputs (``jax.tree.flatten(args)`` order) and returns the flattened outputs, to be
    unflattened with ``out_tree``; it is to be jitted by the caller (donation, counting).
    ``source`` is 'loaded' (from the file), 'written' or 'traced' (tracing done, file not
    written). The program is the same StableHLO either way, so results do not depend on it.
    Returns None, with one RuntimeWarning, when the program is not to be kept: the package's
    sources changed since import, ``fn`` cannot be exported (host callbacks) or its output
    tree cannot be stored, or an output is weakly typed (a stored program would lose that).
    The caller then jits ``fn`` as usual.
    Source: jax.export, https://docs.jax.dev/en/latest/export/export.html.
    """
    import jax
    from jax import export

    from eignn_jax import files

    leaves, in_tree = jax.tree.flatten(tuple(args))
    in_types = [jax.typeof(leaf) for leaf in leaves]
    what = f"program {key.split('|')[0]!r}"
    try:
        name = program_fingerprint(key, in_tree, [str(t) for t in in_types])
    except Uncacheable as error:
        _warn_uncached(what, error)
        return None
    path = directory / f"{name}.program"
    try:
        data = path.read_bytes()
    except OSError:          # none yet, or no directory: trace, then try to write it below
        data = None
    if data is not None:
        try:
            out_tree, exported = _decode(data)
            with contextlib.suppress(OSError):
                os.utime(path)           # recently used: the last to be pruned
            return exported.call, out_tree, "loaded"
        except Exception as error:   # a damaged or foreign file is replaced, never trusted
            warnings.warn(f"traced program {path} is unreadable ({type(error).__name__}: {error}); "
                          f"tracing again", RuntimeWarning, stacklevel=2)

    trees = []

    def flat(*flat_args):
        out_leaves, out_tree = jax.tree.flatten(fn(*jax.tree.unflatten(in_tree, flat_args)))
        trees.append(out_tree)
        return out_leaves

    try:
        exported = export.export(jax.jit(flat))(
            *[jax.ShapeDtypeStruct(t.shape, t.dtype, weak_type=t.weak_type) for t in in_types])
        if any(getattr(aval, "weak_type", False) for aval in exported.out_avals):
            raise ValueError("weakly typed outputs")
        data = _encode(trees[0], exported.serialize())
    except Exception as error:
        _warn_uncached(what, error)
        return None
    source = "written"
    reason = writable_directory(directory)
    if reason is None:
        try:
            files.atomic_write(path, data)
            prune_traced_programs(directory, MAX_TRACED_BYTES, keep=path)
        except OSError as error:
            reason = f"{type(error).__name__}: {error}"
    if reason is not None:
        source = "traced"
        _warn_once(directory, reason)
    return exported.call, trees[0], source


def prune_traced_programs(directory: pathlib.Path, max_bytes: int, keep: pathlib.Path | None = None) -> list[str]:
    """Delete the least recently used ``*.program`` files of ``directory`` (oldest
    modification time first; loading a program touches it) until they take at most
    ``max_bytes``; ``keep`` is never deleted. Returns the names deleted. Files that vanish
    meanwhile (another process pruning) are skipped."""
    entries = []
    for path in directory.glob("*.program"):
        with contextlib.suppress(OSError):
            status = path.stat()
            entries.append((status.st_mtime_ns, status.st_size, path))
    total = sum(size for _, size, _ in entries)
    deleted = []
    for _, size, path in sorted(entries, key=lambda entry: entry[0]):
        if total <= max_bytes:
            break
        if keep is not None and path == keep:
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            deleted.append(path.name)
        total -= size
    return deleted
