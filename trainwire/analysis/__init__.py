"""Analysis: named SQL queries, reports, plots and the dashboard over the store.

- :mod:`trainwire.analysis.queries`: the library of named, parameterised queries (``queries/*.sql``);
- :mod:`trainwire.analysis.report`: collect, print and write the report (``analysis_results.json``,
  ``samples.json``); :mod:`~trainwire.analysis.plots` (PNG) and :mod:`~trainwire.analysis.dashboard`
  (HTML) draw it — these two need the ``analysis`` extra (matplotlib, plotly);
- :mod:`trainwire.analysis.views`: the aggregate views the queries read (migration 0003);
- :mod:`trainwire.analysis.commands`: ``trainwire query`` and ``trainwire analyze``.
"""

from trainwire.analysis.queries import QueryError, list_queries, run_query
from trainwire.analysis.report import AnalysisResults, analyze, collect

__all__ = ["AnalysisResults", "QueryError", "analyze", "collect", "list_queries", "run_query"]
