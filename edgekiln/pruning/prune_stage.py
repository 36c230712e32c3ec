"""The channel-pruning stage of `compile_model`: dependency groups -> importance -> removal -> re-fit.

It runs on the frontend's graph, before any folding (see compile.py for why), and returns a
smaller dense graph that computes the same kind of function with fewer channels:

1. `find_dependency_groups`: the channel groups and, for those left alone, why;
2. per prunable group, the ratio (`--prune channels:R` or the last matching `PATTERN=R`
   override, the smallest over the layers that make the group's channels; the group is left
   whole when any layer making or reading them is excluded), and the floor(R * size) channels
   with the lowest `channel_importance` are chosen, keeping at least one channel of every
   tensor of the group (a Split output never becomes empty);
3. `remove_channels` rewrites the weights, shapes and shape constants;
4. with calibration data and `refit`, `refit_layers` re-fits every layer that lost inputs.

`--explain` lists each group: what was removed, or why it was left alone.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from edgekiln.compiler.explain import ExplainTrace, PassRecord
from edgekiln.compiler.graph import Graph
from edgekiln.compiler.prune_options import PruneOptions
from edgekiln.errors import OptionError
from edgekiln.pruning.channel_removal import drop_unused_initializers, remove_channels
from edgekiln.pruning.dependency_groups import (
    ChannelAnalysis,
    DependencyGroup,
    find_dependency_groups,
)
from edgekiln.pruning.importance import channel_importance, consumer_statistics

MAX_CALIBRATION_BATCHES = 32


def prune_channels(graph: Graph, options: PruneOptions, trace: ExplainTrace, *, quantization=None,
                   progress: bool = False) -> Graph:
    """Remove channels from `graph` (in place) as `options` asks; returns the graph."""
    started = time.perf_counter()
    nodes_before = len(graph.nodes)
    params_before = parameter_count(graph)
    analysis = find_dependency_groups(graph)
    batches = calibration_batches(graph, options, quantization)
    if options.method == "data" and not batches:
        raise OptionError("--prune channels:RATIO:data ranks channels on calibration data: pass --prune-calib DATA "
                          "(or --calib with --quant)")
    activations = None
    if options.method == "data":
        activations = consumer_statistics(graph, analysis, batches)
    removed, applied, not_applied = choose_channels(graph, analysis, options, activations)
    original = graph.clone() if options.refit and batches and removed else None
    masks = remove_channels(graph, analysis, removed)
    drop_unused_initializers(graph)
    if original is not None:
        from edgekiln.pruning.refit import refit_layers

        shrunk = [node.name for node in graph.nodes
                  if node.inputs and node.inputs[0] is not None and node.inputs[0].name in masks
                  and any(node is n for n, _ in analysis.consumers)]
        done, skipped = refit_layers(graph, original, shrunk, masks, batches, progress=progress)
        applied += [f"re-fit {d}" for d in done]
        not_applied += [f"not re-fit: {s}" for s in skipped]
    elif options.refit and removed:
        not_applied.append("re-fit skipped: no calibration data (pass --prune-calib DATA, or --calib with --quant)")
    params_after = parameter_count(graph)
    trace.records.append(PassRecord("prune-channels", 1, bool(removed), nodes_before, len(graph.nodes),
                                    applied, not_applied, stage="prune"))
    trace.note(f"pruning: removed {len(removed)} channel(s); parameters {params_before:,} -> {params_after:,} "
               f"({time.perf_counter() - started:.1f} s)")
    return graph


def choose_channels(graph: Graph, analysis: ChannelAnalysis, options: PruneOptions,
                    activations: dict | None) -> tuple[set[int], list[str], list[str]]:
    """The channels (unit ids) to remove, and the explain lines for every group."""
    removed: set[int] = set()
    applied, not_applied = [], []
    op_types = {n.name: n.op_type for n in graph.nodes}
    for group in analysis.groups:
        if not group.prunable:
            shown = "; ".join(group.reasons[:2]) + (f" (+{len(group.reasons) - 2} more)" if len(group.reasons) > 2
                                                    else "")
            not_applied.append(f"{group.describe()} left alone: {shown}")
            continue
        excluded = [n for n in group.producers + group.consumers if options.excluded(n, op_types.get(n, ""))]
        if excluded:
            not_applied.append(f"{group.describe()} left alone: --prune-exclude matches {', '.join(excluded)}")
            continue
        ratio = min(options.channel_ratio_for(n, op_types.get(n, "")) for n in group.producers)
        count = min(int(ratio * group.size + 1e-9), group.size - 1)
        if count <= 0:
            not_applied.append(f"{group.describe()} kept whole: ratio {ratio:g} removes no channel of {group.size}")
            continue
        scores, method = channel_importance(graph, analysis, group, options.method, activations)
        chosen = _keep_every_tensor_alive(group, np.argsort(scores, kind="stable")[:count], scores)
        removed.update(group.units[i] for i in chosen)
        fallback = f" ({options.method} unavailable)" if method != options.method else ""
        applied.append(f"{group.describe()}: removed {len(chosen)} of {group.size} channels by {method}{fallback} "
                       f"{_ranges(sorted(chosen))}")
    return removed, applied, not_applied


def _keep_every_tensor_alive(group: DependencyGroup, chosen: np.ndarray, scores: np.ndarray) -> list[int]:
    """Drop from `chosen` the best channel of any tensor that would otherwise lose all its positions."""
    chosen_set = {int(c) for c in chosen}
    for member in group.members:
        present = set(member.channels.tolist())
        if present and present <= chosen_set:
            chosen_set.discard(max(present, key=lambda c: scores[c]))
    return sorted(chosen_set)


def _ranges(indices: list[int]) -> str:
    shown = ", ".join(map(str, indices[:12]))
    return f"[{shown}{', ...' if len(indices) > 12 else ''}]"


def calibration_batches(graph: Graph, options: PruneOptions, quantization) -> list[dict[str, np.ndarray]]:
    """Up to MAX_CALIBRATION_BATCHES batches from --prune-calib, else from --calib; [] when there is none."""
    spec = options.calib if options.calib is not None else (quantization.calib if quantization is not None else None)
    if spec is None or not (options.refit or options.method == "data"):
        return []
    if isinstance(spec, Iterator) and options.calib is None:
        raise OptionError("pruning and quantization both read the calibration data, and a one-shot iterator can be "
                          "read once: pass a list (or a path), or give pruning its own --prune-calib")
    from edgekiln.calibration import ImagePreprocessing, open_calibration_data

    preprocessing = None
    if quantization is not None and quantization.preprocessing:
        preprocessing = ImagePreprocessing.parse(quantization.preprocessing)
    count = options.calib_samples or (quantization.calib_samples if quantization is not None else None)
    data = open_calibration_data(spec, graph, preprocessing=preprocessing, model_graph=graph, num_samples=count)
    batches = []
    for batch in data:
        batches.append(batch)
        if len(batches) >= MAX_CALIBRATION_BATCHES:
            break
    return batches


def parameter_count(graph: Graph) -> int:
    return int(sum(np.prod(v.shape) for v in graph.main.initializers.values() if v.shape is not None))
