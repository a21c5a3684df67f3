"""The PruMUX model: multiplexer, compact BERT encoder, demultiplexer, L0 masks, pruning, throughput.

Running a trained model for serving (padded PyTorch, CUDA graphs, ONNX Runtime): `prumux.inference`.
"""

from prumux.config import EncoderConfig, PruMUXConfig, prunable_parameters, realised_sparsity
from prumux.encoder import Encoder
from prumux.l0 import L0Module
from prumux.model import PruMUXModel, PruMUXOutput
from prumux.mux import Demultiplexer, Multiplexer
from prumux.pruning import KeptLayerNorm, pad_ffn, pad_hidden, prune
from prumux.throughput import (
    ThroughputResult,
    encoder_flops,
    hardware_name,
    measure_forward,
    measure_throughput,
    model_flops,
)

__all__ = [
    "Demultiplexer",
    "Encoder",
    "EncoderConfig",
    "KeptLayerNorm",
    "L0Module",
    "Multiplexer",
    "PruMUXConfig",
    "PruMUXModel",
    "PruMUXOutput",
    "ThroughputResult",
    "encoder_flops",
    "hardware_name",
    "measure_forward",
    "measure_throughput",
    "model_flops",
    "pad_ffn",
    "pad_hidden",
    "prunable_parameters",
    "prune",
    "realised_sparsity",
]
