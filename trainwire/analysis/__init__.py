"""Analysis: named SQL queries, reports, plots and the dashboard over the store."""
