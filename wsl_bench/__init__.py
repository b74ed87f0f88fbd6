"""wsl-bench: weakly-supervised localization benchmark for chest X-rays."""

__version__ = "0.1.0"
