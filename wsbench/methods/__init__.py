"""Weight-space methods: Reconstructors (NeRN, pruning, low-rank, quantisation) and Encoders."""
