"""labelbridge: connect machine-learning models to Label Studio."""

__version__ = "0.1.0"
