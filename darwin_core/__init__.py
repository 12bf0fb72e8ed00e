"""Darwin: breed language models by recombining their weights (no training)."""

__version__ = "0.1.0"
