"""``python -m trainwire``: the same as the ``trainwire`` command."""

from trainwire.cli import main

main()
