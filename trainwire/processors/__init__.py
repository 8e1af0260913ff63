"""Processors: plain-Python stream logic (stats, alerts, filters), driven by the worker runtimes."""
