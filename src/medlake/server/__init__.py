"""The HTTP API (and, as it grows, the web UI) over the same service functions as the CLI.

:func:`medlake.server.app.create_app` builds the FastAPI application for one workspace;
nothing is built at import time, so tests make their own.
"""
