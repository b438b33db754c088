#!/usr/bin/env python3
"""wsbench entry point: `python run_bench.py --method nern --zoo cifar10_resnet`."""
from wsbench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
