"""Logging set-up shared by the CLI, the server and library use.

medlake logs through the standard ``logging`` module under the ``medlake`` logger; the
CLI attaches a Rich handler, libraries embedding medlake keep their own handlers.
"""

from __future__ import annotations

import logging

LOGGER_NAME = "medlake"


def get_logger(name: str) -> logging.Logger:
    """Return the logger for a medlake module (``name`` is usually ``__name__``)."""
    if not name.startswith(LOGGER_NAME):
        name = f"{LOGGER_NAME}.{name}"
    return logging.getLogger(name)


def configure(
    level: int | str = logging.WARNING, *, handler: logging.Handler | None = None
) -> None:
    """Attach ``handler`` (default: stderr) to the medlake logger at ``level``."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(level)
    for existing in list(logger.handlers):
        logger.removeHandler(existing)
    handler = handler or logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
