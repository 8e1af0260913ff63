"""Sinks: where processed records end up (ClickHouse, fine-tuning data files)."""
