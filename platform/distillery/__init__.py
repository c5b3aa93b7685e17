"""Distillery: distill an expensive teacher into a cheap student on Ray."""

__version__ = "0.1.0"
