#!/usr/bin/env python
"""Does our DWSNet learn like the official DWSNets model? scripts/encoder_parity.py --method dwsnet.

    WSBENCH_OFFICIAL_DWSNETS=<checkout of github:AvivNavon/DWSNets> WSBENCH_DATA_DIR=../shared/data \
        python scripts/dwsnet_parity.py --zoo siren_mnist --variant small [--steps 300] [--seeds 0 1] \
        [--out leaderboards/parity/dwsnet_siren_mnist_small]   # writes <out>.json and <out>.md

Both models at the official MNIST-INR settings (hidden 32, 4 hidden DWS layers, max reduction, SAB
with 8 heads, BatchNorm, no dropout) with the official trainer's normalisation and optimiser; see
scripts/encoder_parity.py for what is compared.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from encoder_parity import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(method="dwsnet", script="dwsnet_parity.py"))
