"""guardian: a supervisor that keeps a live trading bot's state sound and gates its start."""

__version__ = "0.1.0"
