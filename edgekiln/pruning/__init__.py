"""Pruning: structured channel pruning from the graph's dependency groups, and weight sparsity.

    dependency_groups.py   which channels must be removed together (residual Add, Concat, depthwise, SE, ...)
    importance.py          how much each channel of a group matters (L1, L2, BN gamma, reconstruction error)
    channel_removal.py     removes the chosen channels: a smaller dense ONNX model
    refit.py               least-squares re-fit of the layer after a pruned group
    prune_stage.py         the compile stage that ties them together (`prune_channels`)
    activations.py         intermediate values of the graph on calibration batches (onnxruntime)
    conv_patches.py        im2col of a Conv node's input, for data-driven importance and refit

    sparsity_weights.py    which weights may be zeroed, seen along the input channel
    sparsity_stage.py      the compile stage for `--sparsity 2:4 | 1:4 | RATIO`
    sparsity_formats.py    the runtime's block-sparse and packed N:M weight formats
    sparsity_cost.py       the per-layer, per-target cost model: sparse kernel vs dense
    sparsity_kernels.py    which calls of an arm_cpu Program run a sparse kernel
"""
