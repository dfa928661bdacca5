"""One process serves the agents' page (Gradio, at /) and the REST API (FastAPI, at /api/v1, docs at /docs).

    serve(home, "127.0.0.1", 7860, ServerSettings.from_env())     # ServerSettings: ui/settings.py

Login is off by default, and then the server listens on loopback addresses only: `serve` refuses any
other host unless a username and password are set (AGENT_HELPER_USERNAME / AGENT_HELPER_PASSWORD).
With a login, the page shows a sign-in form and the API wants `Authorization: Bearer <token>`
(AGENT_HELPER_API_TOKEN) or HTTP Basic with the same username and password.
"""

from __future__ import annotations

import ipaddress
import logging
import threading

from app.home import Home
from ingest.pipeline import IngestOptions
from ui.settings import ENV_API_TOKEN, ENV_PASSWORD, ENV_USERNAME, ServerSettings, SettingsError

log = logging.getLogger("agent_helper.server")

LOCAL_HOSTS = ("localhost",)


def is_local_host(host: str) -> bool:
    if host.lower() in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host: str, settings: ServerSettings) -> None:
    """Refuse to listen beyond this machine without a login."""
    if not settings.auth_enabled and not is_local_host(host):
        raise SettingsError(
            f"refusing to serve on {host} without a login: anyone who can reach it could read and change "
            f"the knowledge base. Set {ENV_USERNAME} and {ENV_PASSWORD} (and optionally {ENV_API_TOKEN}), "
            "or serve on 127.0.0.1"
        )


def create_app(service, settings: ServerSettings | None = None):
    """The FastAPI app: REST API under /api/v1, OpenAPI docs at /docs, the page mounted at /."""
    import gradio as gr
    from fastapi import FastAPI

    from ui import api, web

    settings = settings or ServerSettings()
    app = FastAPI(
        title="agent-helper API",
        version="1",
        description=(api.__doc__ or "").strip(),
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.include_router(api.build_router(service, settings))
    api.add_error_handlers(app)
    app.add_middleware(api.UploadLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(api.SameOriginGuard)
    page = web.build_page(service, settings)
    return gr.mount_gradio_app(app, page, path="/", **web.page_options(settings))


def _warm_up(service) -> None:
    try:
        service.warm_up()
        log.info("model loaded: %s", service.status_line())
    except Exception:  # the first question will report it properly
        log.exception("loading the model in the background failed")


def serve(home: Home, host: str = "127.0.0.1", port: int = 7860, settings: ServerSettings | None = None,
          *, model_config=None, judge_config=None, log_level: str = "info") -> None:
    """Start the page and the API (blocks until stopped). SettingsError for a non-local host without
    a login. `model_config` None = the embedded model with the shipped adapter (cached under home)."""
    import uvicorn

    from app.service import AgentHelper

    settings = settings or ServerSettings.from_env()
    check_host(host, settings)
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    service = AgentHelper(home, model_config, judge_config, IngestOptions(max_bytes=settings.max_upload_bytes))
    if settings.warm_up:
        threading.Thread(target=_warm_up, args=(service,), name="model-warm-up", daemon=True).start()
    app = create_app(service, settings)
    where = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    print(f"agent-helper: page {where} · API {where}api/v1 · docs {where}docs"
          + (" · login required" if settings.auth_enabled else " · no login (localhost only)"), flush=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


__all__ = ["check_host", "create_app", "is_local_host", "serve"]
