"""Jetty gateway: the HTTP surface and the shared kernel."""

__version__ = "0.1.0"
