"""One module per experiment, each defining ``EXPERIMENT`` (see :mod:`adamkit.lab.frame`)."""
