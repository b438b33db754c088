"""Where the tests find the real data: WSBENCH_DATA_DIR, else ../shared/data beside the checkout."""
from __future__ import annotations

import os
from pathlib import Path

DATA_DIR = Path(os.environ.get("WSBENCH_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
PRETRAINED_R20 = DATA_DIR / "pretrained" / "resnet20.safetensors"
