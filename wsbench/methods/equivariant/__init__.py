"""Layers equivariant to neuron permutations, shared by DWSNet and NFN: layout (a network as tensors
with permutation-labelled axes), blocks (every equivariant tensor-to-tensor map), layer (the DWS
layer of all blocks, its BatchNorm, the invariant head)."""
