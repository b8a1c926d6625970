"""The ``medlake`` command line: parse, call one service function, render.

Commands live in one module per domain; errors become one line and an exit code in
:func:`medlake.cli.main.run`, the only place that knows about exit codes.
"""
