"""The web dashboard for people, in HTTP and SSE mode: ``/dashboard`` (pages), ``/health`` and ``/ready``.

:func:`dashboard_mounter` is the one entry: :func:`server.app.transports.http_app` calls what it returns to put the
dashboard beside ``/mcp`` (or ``/sse``). Pages are rendered on the server (Jinja2 templates, SVG charts, a
little vanilla JavaScript for the live regions), behind the same API keys, roles and Host/Origin checks as
``/mcp``; see :mod:`server.app.dashboard.web` for the pages and :mod:`server.app.dashboard.sessions` for login,
sessions and CSRF. Importing this package imports no Jinja2: simple mode answers ``/dashboard`` with "needs full
mode" and still serves the probes.
"""

from server.app.dashboard.mount import Mounter, dashboard_mounter

__all__ = ["Mounter", "dashboard_mounter"]
