"""JAX's persistent compilation cache, turned on by the command-line entry points.

XLA compiles the paper-size train step in 6–10 s on 2 CPU cores, every process. With the
persistent cache, the first process writes each compiled executable to disk, keyed by the
program, the jax / jaxlib versions, the backend and the compile options, and a later
process on the same machine loads it instead of compiling.

Importing this module changes nothing: library users choose their own jax configuration,
and only the entry points (``experiments.*``) call :func:`enable_persistent_cache`.

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
import os
import pathlib
import tempfile
import warnings
from typing import Iterator, Mapping

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
                            min_compile_time_s: float = MIN_COMPILE_TIME_S) -> pathlib.Path | None:
    """Turn on JAX's persistent compilation cache in ``directory`` for this process.

    directory: where compiled programs are kept; None: :func:`cache_directory` of the
      environment (which may say that there is to be no cache).
    min_compile_time_s: only programs that took at least this many seconds to compile are
      written (``jax_persistent_cache_min_compile_time_secs``); every program is looked up.

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
    return path


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
