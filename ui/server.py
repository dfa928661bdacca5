"""One process serves the agents' page (Gradio, at /) and the REST API (FastAPI, at /api/v1, docs at /docs).

    serve(home, "127.0.0.1", 7860, ServerSettings.from_env())

Login is off by default, and then the server listens on loopback addresses only: `serve` refuses any
other host unless a username and password are set (AGENT_HELPER_USERNAME / AGENT_HELPER_PASSWORD).
With a login, the page shows a sign-in form and the API wants `Authorization: Bearer <token>`
(AGENT_HELPER_API_TOKEN) or HTTP Basic with the same username and password.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import threading
from dataclasses import dataclass, fields
from typing import Mapping

from ingest.pipeline import SUPPORTED_SUFFIXES, IngestOptions
from ui.home import Home

log = logging.getLogger("agent_helper.server")

ENV_USERNAME = "AGENT_HELPER_USERNAME"
ENV_PASSWORD = "AGENT_HELPER_PASSWORD"
ENV_API_TOKEN = "AGENT_HELPER_API_TOKEN"
ENV_MAX_UPLOAD_MB = "AGENT_HELPER_MAX_UPLOAD_MB"
ENV_TORCH_THREADS = "AGENT_HELPER_TORCH_THREADS"
LOCAL_HOSTS = ("localhost",)


class SettingsError(ValueError):
    """Server settings that cannot work; the message says what to change."""


@dataclass(frozen=True)
class ServerSettings:
    username: str | None = None
    """Login for the page and the API; None (with password None) = no login, localhost only."""
    password: str | None = None
    api_token: str | None = None
    """Bearer token for the API (optional; HTTP Basic with username/password works too). Needs a login."""
    max_upload_mb: float = 50.0
    """Per-file upload limit (page and API). Files up to twice this size get a per-file message; the
    page's transfer refuses larger ones outright, the API refuses requests over max_files × the limit."""
    allowed_suffixes: tuple[str, ...] = SUPPORTED_SUFFIXES
    """File types accepted for upload (a subset of .pdf, .csv, .jsonl)."""
    max_files: int = 20
    """Files per upload request (API)."""
    chat_concurrency: int = 4
    """Chats the page's queue runs at once; generation itself takes turns (AgentHelper.judge_slots)."""
    queue_concurrency: int = 2
    """Default concurrency of the page's other events."""
    max_queue: int = 256
    """Requests waiting in the page's queue before new ones are turned away."""
    warm_up: bool = True
    """Load the model in the background when the server starts (else on the first question)."""
    torch_threads: int | None = None
    """torch.set_num_threads for the process; None = torch's default. On a CPU shared with other jobs,
    1 was ~8x faster per answer than 2 (OpenMP threads spinning against other processes)."""

    def __post_init__(self):
        if (self.username is None) != (self.password is None):
            raise SettingsError("set both a username and a password for the login, or neither")
        if self.username is not None and (not self.username.strip() or not self.password):
            raise SettingsError("the login's username and password must not be empty")
        if self.api_token is not None and self.username is None:
            raise SettingsError("an API token needs a login (username and password) as well: "
                                "without one the page would be open")
        if self.api_token is not None and len(self.api_token) < 16:
            raise SettingsError("the API token must be at least 16 characters")
        if self.max_upload_mb <= 0:
            raise SettingsError("max_upload_mb must be positive")
        suffixes = tuple(s.lower() if s.startswith(".") else f".{s.lower()}" for s in self.allowed_suffixes)
        unknown = [s for s in suffixes if s not in SUPPORTED_SUFFIXES]
        if unknown or not suffixes:
            raise SettingsError(f"allowed_suffixes must be some of {', '.join(SUPPORTED_SUFFIXES)}")
        object.__setattr__(self, "allowed_suffixes", suffixes)
        if self.torch_threads is not None and self.torch_threads < 1:
            raise SettingsError("torch_threads must be at least 1")
        for name in ("max_files", "chat_concurrency", "queue_concurrency", "max_queue"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be at least 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "ServerSettings":
        """Defaults, then AGENT_HELPER_USERNAME/_PASSWORD/_API_TOKEN/_MAX_UPLOAD_MB/_TORCH_THREADS, then
        overrides (None values are ignored)."""
        env = os.environ if environ is None else environ
        values: dict = {}
        for key, name in ((ENV_USERNAME, "username"), (ENV_PASSWORD, "password"), (ENV_API_TOKEN, "api_token")):
            if env.get(key):
                values[name] = env[key]
        if env.get(ENV_MAX_UPLOAD_MB):
            try:
                values["max_upload_mb"] = float(env[ENV_MAX_UPLOAD_MB])
            except ValueError as error:
                raise SettingsError(f"{ENV_MAX_UPLOAD_MB} must be a number of MiB") from error
        if env.get(ENV_TORCH_THREADS):
            try:
                values["torch_threads"] = int(env[ENV_TORCH_THREADS])
            except ValueError as error:
                raise SettingsError(f"{ENV_TORCH_THREADS} must be a whole number") from error
        names = {f.name for f in fields(cls)}
        values.update({k: v for k, v in overrides.items() if k in names and v is not None})
        return cls(**values)

    @property
    def auth_enabled(self) -> bool:
        return self.username is not None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def transfer_limit_bytes(self) -> int:
        """What the page's upload transfer accepts per file (beyond it, Gradio refuses the transfer)."""
        return 2 * self.max_upload_bytes + 2**20

    @property
    def max_request_bytes(self) -> int:
        """Largest API upload request: every file at the per-file limit, plus form overhead."""
        return self.max_files * self.max_upload_bytes + 2**20

    def check_login(self, username: str, password: str) -> bool:
        if not self.auth_enabled:
            return True
        ok_user = secrets.compare_digest(str(username).encode(), self.username.encode())
        ok_pass = secrets.compare_digest(str(password).encode(), self.password.encode())
        return ok_user and ok_pass

    def __repr__(self) -> str:  # never print secrets
        hidden = {"password": self.password and "***", "api_token": self.api_token and "***"}
        shown = ", ".join(f"{f.name}={hidden.get(f.name, getattr(self, f.name))!r}" for f in fields(self))
        return f"ServerSettings({shown})"


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

    from ui.service import AgentHelper

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


__all__ = ["ServerSettings", "SettingsError", "check_host", "create_app", "is_local_host", "serve"]
