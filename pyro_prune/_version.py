"""The library version (one place, read by the package and by the files it writes)."""

__version__ = "0.1.0"
