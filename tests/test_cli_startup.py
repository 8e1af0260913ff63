"""``trainwire --help`` stays fast: the command's modules leave the heavy libraries to the commands that use them."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pyarrow", "chdb", "clickhouse_connect", "numpy", "torch", "aiokafka", "faust", "plotly", "matplotlib")

LOADED_AFTER_HELP = f"""
import json, sys
import trainwire.cli
try:
    trainwire.cli.main(["--help"])
except SystemExit:
    pass
print(json.dumps(sorted(name for name in {HEAVY!r} if name in sys.modules)))
"""


def test_help_imports_no_heavy_library():
    """Importing the command and printing its help (every subcommand's summary) loads none of them."""
    done = subprocess.run([sys.executable, "-c", LOADED_AFTER_HELP], capture_output=True, text=True, check=True)
    *help_text, loaded = done.stdout.strip().splitlines()
    assert "Commands:" in help_text and "analyze" in "\n".join(help_text)
    assert json.loads(loaded) == []
