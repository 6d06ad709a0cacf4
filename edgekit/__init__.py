"""edgekit: take a trained model to an edge device in one measured step."""

__version__ = "0.1.0"
