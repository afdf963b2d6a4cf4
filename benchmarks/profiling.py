"""Where a jitted step spends its time: JAX profiler trace → table of the top operations.

XLA executes a compiled step as a sequence of *thunks* named after HLO instructions
(``fusion.12``, ``dot.3`` …). The profiler's trace records each thunk's duration; the
compiled HLO text maps each instruction to the JAX operation it came from (its
``op_name`` metadata, e.g. ``jvp(EIGNN)/layer_3/invariant_messages/dot_general``). This
module joins the two and sums durations per operation, with the layer index folded
(``layer_*``) so that the table shows what a layer costs, summed over layers.

    with jax.profiler.trace(trace_dir):
        ...run the step k times...
    table = top_operations(trace_dir, compiled.as_text(), steps=k)
"""

from __future__ import annotations

import collections
import gzip
import json
import pathlib
import re

_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{[^}]*op_name="([^"]*)"')
_LAYER = re.compile(r"layer_\d+")


def instruction_sources(hlo_text: str) -> dict[str, str]:
    """HLO instruction name → JAX op_name (layer index replaced by ``*``, jit prefix dropped)."""
    sources = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if match:
            op_name = _LAYER.sub("layer_*", match.group(2))
            sources[match.group(1)] = re.sub(r"^jit\([^)]*\)/", "", op_name)
    return sources


def _trace_events(trace_dir: str | pathlib.Path) -> list[dict]:
    files = sorted(pathlib.Path(trace_dir).rglob("*.trace.json.gz"))
    if not files:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}")
    with gzip.open(files[-1]) as f:
        return json.load(f)["traceEvents"]


def top_operations(trace_dir: str | pathlib.Path, hlo_text: str, steps: int, top: int = 15,
                   by_scope: bool = False) -> list[dict]:
    """The ``top`` operations by thunk time per step (summed over threads), largest first.

    Each row: operation (JAX op_name; 'jvp(...)' = forward, 'transpose(jvp(...))' = backward),
    ms_per_step, share of all attributed thunk time. by_scope: group by the op_name without
    its last component (the primitive), i.e. by module / named scope.
    """
    sources = instruction_sources(hlo_text)
    totals: collections.Counter = collections.Counter()
    for event in _trace_events(trace_dir):
        if event.get("ph") == "X" and event.get("name") in sources:
            name = sources[event["name"]]
            if by_scope:
                name = name.rsplit("/", 1)[0]
            totals[name] += event.get("dur", 0.0)   # microseconds
    grand_total = sum(totals.values()) or 1.0
    return [{"operation": name, "ms_per_step": round(us / 1e3 / steps, 2),
             "share": round(us / grand_total, 3)}
            for name, us in totals.most_common(top)]
