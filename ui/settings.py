"""Everything the interfaces read from the environment, in one place: no other module reads it.

- where the app's state lives (`--home` / $AGENT_HELPER_HOME), the Chroma server holding the knowledge
  base (`--chroma-url` / $AGENT_HELPER_CHROMA_URL), the search embedder (`--embedder` /
  $AGENT_HELPER_EMBEDDER) and the judge's dtype (`--dtype` / $AGENT_HELPER_JUDGE_DTYPE);
- the judge's inference server, if it runs on one (`--judge-url` / $AGENT_HELPER_JUDGE_URL,
  `--judge-model` / $AGENT_HELPER_JUDGE_MODEL, $AGENT_HELPER_JUDGE_API_KEY);
- the server's settings (`ServerSettings.from_env`): login, API token, upload limit, threads;
- the process environment the app sets for itself (offline switches, malloc tuning).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

from app.home import DEFAULT_HOME, Home, shipped_embedder_adapter
from ingest.formats import SUPPORTED_SUFFIXES
from reasoner.server_config import DEFAULT_SERVED_NAME, JudgeServer
from retriever.chroma_client import ChromaServer

HOME_ENV = "AGENT_HELPER_HOME"
CHROMA_URL_ENV = "AGENT_HELPER_CHROMA_URL"
EMBEDDER_ENV = "AGENT_HELPER_EMBEDDER"
JUDGE_DTYPE_ENV = "AGENT_HELPER_JUDGE_DTYPE"
JUDGE_URL_ENV = "AGENT_HELPER_JUDGE_URL"
JUDGE_MODEL_ENV = "AGENT_HELPER_JUDGE_MODEL"
JUDGE_API_KEY_ENV = "AGENT_HELPER_JUDGE_API_KEY"
ENV_USERNAME = "AGENT_HELPER_USERNAME"
ENV_PASSWORD = "AGENT_HELPER_PASSWORD"
ENV_API_TOKEN = "AGENT_HELPER_API_TOKEN"
ENV_MAX_UPLOAD_MB = "AGENT_HELPER_MAX_UPLOAD_MB"
ENV_TORCH_THREADS = "AGENT_HELPER_TORCH_THREADS"
BASE_EMBEDDER = "base"
"""--embedder value for the plain packaged all-MiniLM-L6-v2, without an adapter."""
# The judge's dtypes, as reasoner.backends.DTYPES (not imported: it would load torch for `--help`;
# a test checks they agree).
DTYPES = ("auto", "float32", "bfloat16", "float16")

# Nothing at run time may reach the network: no hub downloads, no telemetry.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "UNSLOTH_DISABLE_STATISTICS": "1",
}
# glibc's default malloc made KV-cache appends 50x slower under load (DESIGN.md); these only
# take effect at process start, so the CLI re-executes itself once with them set.
MALLOC_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "33554432",
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "268435456",
    # Idle OpenMP threads otherwise spin and starve each other on 2 busy cores (measured 22 s vs
    # 4 s per answer while other processes ran).
    "OMP_WAIT_POLICY": "PASSIVE",
}


class SettingsError(ValueError):
    """Settings that cannot work (a flag, an environment variable); the message says what to change."""


def resolve_home(arg: str | None, embedder: str | None = None, chroma_url: str | None = None) -> Home:
    """--home / $AGENT_HELPER_HOME / ./.agent-helper, with the embedder from `resolve_embedder` and
    the Chroma server from `resolve_chroma_server`."""
    root = Path(arg or os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve()
    return Home(root, resolve_embedder(embedder), resolve_chroma_server(chroma_url))


def resolve_chroma_server(arg: str | None) -> ChromaServer | None:
    """--chroma-url / $AGENT_HELPER_CHROMA_URL (http://HOST:PORT of a `chroma run` server); unset =
    embedded Chroma under the home. SettingsError for a URL that is not one."""
    value = arg or os.environ.get(CHROMA_URL_ENV)
    if not value:
        return None
    try:
        return ChromaServer.from_url(value)
    except ValueError as error:
        raise SettingsError(str(error)) from None


def resolve_embedder(arg: str | None) -> Path | None:
    """--embedder / $AGENT_HELPER_EMBEDDER: an adapter folder, or "base" (None); unset = the shipped
    adapter when there is one, else base. SettingsError for a folder that is no adapter."""
    value = arg or os.environ.get(EMBEDDER_ENV)
    if not value:
        return shipped_embedder_adapter()
    if value == BASE_EMBEDDER:
        return None
    folder = Path(value).expanduser().resolve()
    expected = f"expected an adapter folder or '{BASE_EMBEDDER}'"
    if not folder.is_dir():
        raise SettingsError(f"embedder {value}: no such folder ({expected})")
    if not (folder / "adapter_config.json").is_file():
        raise SettingsError(f"embedder {value}: not an embedder adapter folder (no adapter_config.json; {expected})")
    return folder


def resolve_judge_dtype(arg: str | None) -> str:
    """--dtype / $AGENT_HELPER_JUDGE_DTYPE / "auto"; SettingsError for a name not in DTYPES."""
    value = arg or os.environ.get(JUDGE_DTYPE_ENV) or "auto"
    if value not in DTYPES:
        raise SettingsError(f"{JUDGE_DTYPE_ENV}={value!r}: expected one of {', '.join(DTYPES)}")
    return value


def resolve_judge_server(url: str | None, model: str | None = None,
                         timeout_s: float | None = None) -> JudgeServer | None:
    """--judge-url / $AGENT_HELPER_JUDGE_URL: the judge's inference server (None = judge in this process),
    serving it as --judge-model / $AGENT_HELPER_JUDGE_MODEL / "judge", with $AGENT_HELPER_JUDGE_API_KEY."""
    url = url or os.environ.get(JUDGE_URL_ENV)
    model = model or os.environ.get(JUDGE_MODEL_ENV)
    if not url:
        if model:
            raise SettingsError(f"a judge model name needs the server's URL (--judge-url or ${JUDGE_URL_ENV})")
        return None
    extra = {"timeout_s": timeout_s} if timeout_s is not None else {}
    try:
        return JudgeServer(url=url, model=model or DEFAULT_SERVED_NAME, api_key=os.environ.get(JUDGE_API_KEY_ENV) or None,
                           **extra)
    except ValueError as error:
        raise SettingsError(str(error)) from error


def apply_offline_env() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def missing_malloc_env() -> bool:
    return any(key not in os.environ for key in MALLOC_ENV)


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
    """File types accepted for upload (a subset of ingest's SUPPORTED_SUFFIXES)."""
    max_files: int = 20
    """Files per upload request (API)."""
    chat_concurrency: int = 16
    """Chats the page's queue runs at once; their tickets are judged together in batches
    (app/batching.py), so more waiting chats make fuller batches."""
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
        self._check_login()
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

    def _check_login(self) -> None:
        if (self.username is None) != (self.password is None):
            raise SettingsError("set both a username and a password for the login, or neither")
        if self.username is not None and (not self.username.strip() or not self.password):
            raise SettingsError("the login's username and password must not be empty")
        if self.api_token is not None and self.username is None:
            raise SettingsError("an API token needs a login (username and password) as well: "
                                "without one the page would be open")
        if self.api_token is not None and len(self.api_token) < 16:
            raise SettingsError("the API token must be at least 16 characters")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "ServerSettings":
        """Defaults, then AGENT_HELPER_USERNAME/_PASSWORD/_API_TOKEN/_MAX_UPLOAD_MB/_TORCH_THREADS, then
        overrides (None values are ignored)."""
        env = os.environ if environ is None else environ
        values: dict = {}
        for key, name in ((ENV_USERNAME, "username"), (ENV_PASSWORD, "password"), (ENV_API_TOKEN, "api_token")):
            if env.get(key):
                values[name] = env[key]
        for key, name, kind, what in ((ENV_MAX_UPLOAD_MB, "max_upload_mb", float, "a number of MiB"),
                                      (ENV_TORCH_THREADS, "torch_threads", int, "a whole number")):
            if env.get(key):
                try:
                    values[name] = kind(env[key])
                except ValueError as error:
                    raise SettingsError(f"{key} must be {what}") from error
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


__all__ = [
    "BASE_EMBEDDER", "CHROMA_URL_ENV", "DTYPES", "EMBEDDER_ENV", "HOME_ENV", "JUDGE_API_KEY_ENV", "JUDGE_DTYPE_ENV",
    "JUDGE_MODEL_ENV", "JUDGE_URL_ENV", "MALLOC_ENV", "ServerSettings", "SettingsError", "apply_offline_env",
    "missing_malloc_env", "resolve_chroma_server", "resolve_embedder", "resolve_home", "resolve_judge_dtype",
    "resolve_judge_server",
]
