"""``python -m adamkit``: the ``adamkit`` command."""

from adamkit.cli import entry

entry()
