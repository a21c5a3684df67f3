"""A forward pass captured as CUDA graphs: one per input shape, replayed on copies of the inputs."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# Calls run on a side stream before a capture (lazy initialisation, cuBLAS workspaces, allocator warm-up).
WARMUP_CALLS = 3


class CudaGraphs:
    """`forward(*tensors)` captured once per shapes-and-dtypes of its arguments (None allowed), then replayed.

    The graphs share one memory pool; a replay writes the static output, which is returned as a copy.
    """

    def __init__(self, forward: Callable[..., Tensor]):
        self.forward = forward
        self.captured: dict[tuple, tuple[torch.cuda.CUDAGraph, list[Tensor | None], Tensor]] = {}
        self.pool = None

    def __call__(self, *inputs: Tensor | None) -> Tensor:
        key = tuple(None if tensor is None else (tuple(tensor.shape), tensor.dtype) for tensor in inputs)
        if key not in self.captured:
            self.captured[key] = self._capture(inputs)
        graph, static, output = self.captured[key]
        for target, given in zip(static, inputs):
            if target is not None:
                target.copy_(given)
        graph.replay()
        return output.clone()

    def _capture(self, inputs: tuple[Tensor | None, ...]) -> tuple[torch.cuda.CUDAGraph, list[Tensor | None], Tensor]:
        static = [None if tensor is None else tensor.clone() for tensor in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                self.forward(*static)
        torch.cuda.current_stream().wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            output = self.forward(*static)
        return graph, static, output
