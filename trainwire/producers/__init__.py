"""Producers: everything that puts events on the bus (trainer hooks, LLM callers, importers, probes)."""
