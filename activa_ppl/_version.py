"""The version of the activa_ppl package (one place; ``activa_ppl.__version__`` re-exports it)."""

__version__ = "0.1.0"
