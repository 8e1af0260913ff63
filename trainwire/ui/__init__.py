"""The live web UI over the store: ``trainwire ui``, ``trainwire worker --ui``, ``trainwire demo --ui``.

Each view (runs, run, groups, samples, judge, alerts, logits) is a module of
:mod:`trainwire.ui.views` with its data routes, each route one named query of the SQL library
(:mod:`trainwire.analysis.queries`); the browser side is plain HTML and JavaScript modules under
``static/`` with plotly.js from the plotly package, all served by the app (no CDN, no build).
It needs the ``ui`` extra (Starlette and uvicorn).
"""

from __future__ import annotations

from trainwire.ui.auth import Credentials

__all__ = ["Credentials"]
