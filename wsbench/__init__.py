"""wsbench: a benchmark suite for weight-space learning."""
__version__ = "0.1.0"
