"""cachestorm: load-testing and chaos toolkit for caches."""

__version__ = "0.1.0"
