"""rw: rewind for your shell."""

__version__ = "0.1.0"
