"""The read-only web view of remediations: server-rendered pages over the API server and the audit store.

It reads with the identity of the kubeconfig it is given and writes nothing. Each page refreshes its
`<main>` from the server every few seconds (a small inline script); without JavaScript it is a plain page.
"""

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from lightkube import AsyncClient

from kubernaut.domain.duration import format_rfc3339
from kubernaut.kube.client import make_client
from kubernaut.kube.errors import to_kube_error
from kubernaut.web.views import (
    build_pipelinerun_state,
    build_row,
    build_timeline,
    list_remediations,
    list_targets,
    read_audit_trail,
    read_remediation,
)


@dataclass(frozen=True)
class UiConfig:
    kubeconfig: Path | None
    execution_namespace: str
    audit_url: str | None
    refresh_seconds: float = 5.0


_CLIENT = web.AppKey("client", AsyncClient)
_CONFIG = web.AppKey("config", UiConfig)
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("kubernaut.web", "templates"),
    autoescape=True,
)
_TEMPLATES.filters["rfc3339"] = lambda moment: format_rfc3339(moment) if moment else ""
_TEMPLATES.globals["pipelinerun_state"] = build_pipelinerun_state


def _render(request: web.Request, template: str, *, status: int = 200, **values: Any) -> web.Response:
    config = request.app[_CONFIG]
    html = _TEMPLATES.get_template(template).render(
        refresh_ms=int(config.refresh_seconds * 1000), path=request.path, **values
    )
    return web.Response(text=html, status=status, content_type="text/html")


@web.middleware
async def _error_pages(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A missing object is a 404 page; a failed API request a 502 page that says what the server answered."""
    try:
        return await handler(request)
    except LookupError as exc:
        return _render(request, "error.html", status=404, title="Not found", message=str(exc))
    except web.HTTPNotFound:
        return _render(request, "error.html", status=404, title="Not found", message=f"No page at {request.path}")
    except web.HTTPException:
        raise
    except Exception as exc:
        error = to_kube_error(exc)
        if error is None:
            raise
        code = f" (HTTP {error.code}{' ' + error.reason if error.reason else ''})" if error.code else ""
        return _render(
            request,
            "error.html",
            status=502,
            title="The API server could not be read",
            message=f"{type(error).__name__}{code}: {error.message}",
        )


async def _list(request: web.Request) -> web.Response:
    now = datetime.now(UTC)
    rrs = await list_remediations(request.app[_CLIENT], None)
    return _render(request, "list.html", rows=[build_row(rr, now) for rr in rrs])


async def _remediation(request: web.Request) -> web.Response:
    config = request.app[_CONFIG]
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    details = await read_remediation(request.app[_CLIENT], name, namespace)
    trail = await read_audit_trail(config.audit_url, details, verify=True) if config.audit_url else None
    return _render(
        request,
        "remediation.html",
        details=details,
        row=build_row(details.rr, datetime.now(UTC)),
        # build_timeline puts the moments without a time (a block now in force) last, at datetime.max.
        timeline=[(m if m.year < 9999 else None, text) for m, text in build_timeline(details.rr, details.wfe)],
        trail=trail,
    )


async def _targets(request: web.Request) -> web.Response:
    config = request.app[_CONFIG]
    targets = await list_targets(request.app[_CLIENT], config.execution_namespace)
    return _render(request, "targets.html", targets=targets, execution_namespace=config.execution_namespace)


def build_app(config: UiConfig) -> web.Application:
    app = web.Application(middlewares=[_error_pages])
    app[_CONFIG] = config

    async def client(app: web.Application) -> AsyncIterator[None]:
        app[_CLIENT] = make_client(config.kubeconfig)
        yield
        await app[_CLIENT].close()

    app.cleanup_ctx.append(client)
    app.router.add_get("/", _list)
    app.router.add_get("/remediations/{namespace}/{name}", _remediation)
    app.router.add_get("/targets", _targets)
    return app


@contextlib.asynccontextmanager
async def serving(config: UiConfig, address: str, port: int) -> AsyncIterator[str]:
    """The UI served on address:port (0: any free port) for the duration of the block; yields its URL."""
    # Pages are short reads: on stop, a request still open gets 2 s, not aiohttp's default minute.
    runner = web.AppRunner(build_app(config), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, address, port)
        await site.start()
        host, bound = site._server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]
        yield f"http://{host if ':' not in host else f'[{host}]'}:{bound}"
    finally:
        await runner.cleanup()
