"""birnn: a reproducible DVC + MLflow pipeline for a stacked bidirectional RNN on MNIST."""

__version__ = "0.1.0"
