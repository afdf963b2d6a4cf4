"""Benchmark: memory bandwidth, a STREAM-like triad a = b + s·c on float32 arrays.

    python -m benchmarks.memory                        # 3 arrays of 64 MiB (1 GiB on a GPU), numpy and JAX
    python -m benchmarks.memory --mib 256 --repeats 20

The triad is the roofline's memory ceiling for the other benchmarks
(``benchmarks.train_step`` divides XLA's "bytes accessed" of its step by the JAX figure).
Bandwidth counts 3 arrays × 4 bytes per element per triad (read b, read c, write a), as
STREAM does, in GB/s = 10⁹ bytes per second; the read that a cache may do of ``a`` before
writing it (write-allocate) is not counted, so the figure is what a program sees.

Implementations (one JSON line each):

* ``numpy``: one thread, blockwise so that s·c goes to a small temporary that stays in
  cache (numpy has no fused triad; whole-array ``b + s*c`` would move 5 arrays, not 3).
* ``jax``: ``jax.jit`` of b + s·c on ``jax.devices()[0]`` (XLA:CPU here, the GPU's HBM on a
  GPU), writing into a donated buffer, so no memory is newly mapped per call.
* ``jax_new_output``: the same without donation: XLA allocates a fresh output every call;
  on CPU a 64 MiB buffer is mapped anew each time, and its first writes page-fault (see
  ``minor_faults_per_call``).

Steady state: ``--warmup`` calls (compilation, first touch), then the median of ``--repeats``.

Source: J. D. McCalpin, "Memory Bandwidth and Machine Balance in Current High Performance
Computers", IEEE TCCA Newsletter (1995); STREAM, https://www.cs.virginia.edu/stream/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

import numpy as np

SCALAR = 3.0
BYTES_PER_ELEMENT = 3 * 4           # read b, read c, write a; float32
DEFAULT_MIB = 64                    # per array: 3 × 64 MiB, far beyond any CPU's caches
# On an accelerator 64 MiB arrays take tens of microseconds, comparable to the launch and
# synchronisation overhead that the timing includes; 1 GiB ones take milliseconds.
ACCELERATOR_MIB = 1024
# numpy: elements per block; its temporary (128 KiB) stays in a core's L2 cache.
NUMPY_BLOCK = 32 * 1024
IMPLEMENTATIONS = ("numpy", "jax", "jax_new_output")


def _numpy_triad(a: np.ndarray, b: np.ndarray, c: np.ndarray, scalar: float) -> None:
    """a[:] = b + scalar·c, block by block through a cache-resident temporary. All float32 [n]."""
    temporary = np.empty(NUMPY_BLOCK, np.float32)
    for start in range(0, len(a), NUMPY_BLOCK):
        stop = min(start + NUMPY_BLOCK, len(a))
        scratch = temporary[: stop - start]
        np.multiply(c[start:stop], np.float32(scalar), out=scratch)
        np.add(b[start:stop], scratch, out=a[start:stop])


def _timed(call, warmup: int, repeats: int) -> tuple[list[float], float, float]:
    """Run ``call`` warmup times, then time it ``repeats`` times.

    Returns (wall seconds per timed call, CPU seconds per call, minor page faults per call);
    CPU time and faults are the whole process's (all threads; resource.getrusage).
    """
    for _ in range(warmup):
        call()
    walls = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        walls.append(time.perf_counter() - started)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / repeats
    return walls, cpu, (after.ru_minflt - before.ru_minflt) / repeats


def _numpy_call(n: int):
    rng = np.random.default_rng(0)
    b, c = rng.random(n, np.float32), rng.random(n, np.float32)
    a = np.empty_like(b)

    def call():
        _numpy_triad(a, b, c, SCALAR)

    def check():
        np.testing.assert_allclose(a[:1000], b[:1000] + np.float32(SCALAR) * c[:1000], rtol=1e-6)

    return call, check, "cpu"


def _jax_call(n: int, donate: bool):
    import jax
    import jax.numpy as jnp

    device = jax.devices()[0]
    b = jax.device_put(jnp.arange(n, dtype=jnp.float32) / n, device)
    c = jax.device_put(jnp.ones(n, jnp.float32), device)
    # keep_unused: a is not read, and jit would otherwise drop it, and its donation with it.
    triad = jax.jit(lambda a, b, c: b + SCALAR * c, donate_argnums=0 if donate else (), keep_unused=donate)
    state = {"a": jnp.zeros(n, jnp.float32, device=device)}

    def call():
        # With donation the output reuses a's buffer; without it a is only read for its shape
        # (XLA drops the unused argument) and a new buffer comes back every call.
        state["a"] = triad(state["a"], b, c)
        state["a"].block_until_ready()

    def check():
        got = np.asarray(state["a"][:1000])
        np.testing.assert_allclose(got, np.arange(1000, dtype=np.float32) / n + SCALAR, rtol=1e-6)

    return call, check, device.platform


def default_mib(implementation: str = "jax") -> float:
    """Array size (MiB) for ``implementation``: DEFAULT_MIB on the host, ACCELERATOR_MIB for
    the JAX ones when jax.devices()[0] is not a CPU."""
    if implementation == "numpy":
        return DEFAULT_MIB
    import jax
    return DEFAULT_MIB if jax.devices()[0].platform == "cpu" else ACCELERATOR_MIB


def triad_bandwidth(implementation: str = "jax", mib: float | None = None, repeats: int = 10,
                    warmup: int = 2) -> dict:
    """Measure the triad a = b + s·c on three float32 arrays of ``mib`` MiB each.

    implementation: 'numpy' (one thread, host memory), 'jax' (jit on jax.devices()[0], into
      a donated buffer) or 'jax_new_output' (jit, a fresh output buffer per call).
    mib: None: :func:`default_mib`.
    Returns a JSON-ready dict: benchmark 'triad', implementation, device, n_elements,
    array_mib, counted_bytes_per_call (3 × 4 bytes × n), median_s / min_s per call,
    gb_s (counted bytes / median, 10⁹ B/s), best_gb_s (/ min), cpu_s_per_call,
    minor_faults_per_call, repeats.
    Raises ValueError for an unknown implementation or a size under 1 MiB (cache-resident,
    so not a memory figure); AssertionError if a result is wrong.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation {implementation!r}: choose one of {IMPLEMENTATIONS}")
    mib = default_mib(implementation) if mib is None else mib
    if mib < 1:
        raise ValueError(f"mib={mib}: arrays under 1 MiB would be timed in cache")
    n = int(mib * 2**20) // 4
    if implementation == "numpy":
        call, check, platform = _numpy_call(n)
    else:
        call, check, platform = _jax_call(n, donate=implementation == "jax")
    walls, cpu, faults = _timed(call, warmup, repeats)
    check()
    counted = BYTES_PER_ELEMENT * n
    median = statistics.median(walls)
    return {"benchmark": "triad", "implementation": implementation, "device": platform,
            "n_elements": n, "array_mib": round(n * 4 / 2**20, 1), "counted_bytes_per_call": counted,
            "median_s": round(median, 5), "min_s": round(min(walls), 5),
            "gb_s": round(counted / median / 1e9, 2), "best_gb_s": round(counted / min(walls) / 1e9, 2),
            "cpu_s_per_call": round(cpu, 5), "minor_faults_per_call": round(faults, 1),
            "repeats": repeats}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=float, default=None,
                        help=f"size of each of the 3 arrays, MiB (default {DEFAULT_MIB}; {ACCELERATOR_MIB} on a GPU)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--implementations", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    for implementation in args.implementations:
        row = triad_bandwidth(implementation, args.mib, args.repeats, args.warmup)
        row["load_1min_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
