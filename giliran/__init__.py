"""Giliran: event-driven queue and appointment system for Indonesian public-service sessions."""

__version__ = "0.1.0"
