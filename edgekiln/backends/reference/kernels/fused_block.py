"""QInvertedResidual in the integer reference: the composition of its three parts.

The fused call (compiler/fused_block_lowering.py) carries the expand, depthwise and project
calls' attributes unchanged; running them one after the other with the existing kernels is
the definition of the fused kernel's result, so a backend computing the block tile by tile
must match the unfused Program bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekiln.backends.reference.kernels import conv
from edgekiln.compiler.fused_block_lowering import part_calls
from edgekiln.compiler.program import KernelCall

_KERNELS = {"QConv2D": conv.conv2d, "QDepthwiseConv2D": conv.depthwise_conv2d}


def inverted_residual(call: KernelCall, args: list[Any]) -> list[np.ndarray]:
    value = args[0]
    for part, layout in part_calls(call):
        operands = [value if j < 0 else args[j] for j in layout]
        value = _KERNELS[part.op](part, operands)[0]
    return [value]
