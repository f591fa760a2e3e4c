"""The ``irsflow`` command line: train and resume jobs, run the local Prefect stack, and drive the
codebook, feedback, teacher and eval-gate flows from a shell.

``cli.main`` builds the parser and dispatches; one module per command group registers its own
subcommands. Run it as the installed ``irsflow`` script or as ``python -m cli ARGS``.
"""
