"""DWSNet (Navon et al., ICML 2023): layout (tensors with permutation-labelled axes), blocks (every
equivariant tensor-to-tensor map), layer (the four block families, BN, invariant head), model."""
from .model import DWSNet

__all__ = ["DWSNet"]
