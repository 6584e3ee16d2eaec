"""The package's version, in the base layer so that every layer (a pack's manifest records it) can read it."""

__version__ = "0.1.0"
