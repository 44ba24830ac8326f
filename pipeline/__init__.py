"""Nightly batch text classification: raw text -> Parquet lake -> LSTM -> Arrow predictions -> JSON."""

__version__ = "0.1.0"
