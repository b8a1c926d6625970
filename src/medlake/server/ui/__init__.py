"""The web UI: pages served by the API's own process, every asset from the package.

:func:`install` adds the pages under ``/ui`` and their static files (CSS, JavaScript and
the ``plotly.min.js`` that the installed ``plotly`` package ships: hospital networks are
closed, so nothing comes from a CDN). See ``docs/ui.md``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles


def plotly_js() -> Path:
    """The minified Plotly bundled in the installed ``plotly`` Python package."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def install(app: FastAPI) -> None:
    """Serve the pages (``/ui/...``), their static files and ``/`` → the dashboard."""
    from medlake.server.ui import analyses, jobs, pages  # noqa: F401  (registers the pages)
    from medlake.server.ui.web import router

    @app.get("/ui/static/plotly.min.js", include_in_schema=False)
    def plotly_bundle() -> FileResponse:
        return FileResponse(plotly_js(), media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})  # fmt: skip

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/dashboard", status_code=307)

    app.mount("/ui/static", StaticFiles(directory=Path(__file__).parent / "static"),
              name="ui_static")  # fmt: skip
    app.include_router(router)
