"""NeRN (Ashkenazi et al., ICLR 2023): neural representations for neural networks.

Modules: layout (which kernels, where), orderings (smoothness permutations), embeddings
(coordinates, positional encodings), predictor (the MLP), losses, sampling, optim (Ranger),
student (BN-folded functional network), trainer (one step), fit (loop, selection, resume),
checkpoint, meta (size, meta-compression), config, method (the registered Reconstructor).
"""
from .method import NeRN

__all__ = ["NeRN"]
