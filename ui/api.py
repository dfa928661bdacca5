"""The REST API for CRM systems, served beside the page by the same process (see ui/server.py).

    POST   /api/v1/match                 {"ticket": str} → the `ask --json` object + answer_id
    GET    /api/v1/documents             → the documents
    POST   /api/v1/documents             multipart, field "files" (one or more) → per-file results
    DELETE /api/v1/documents/{doc_id}    → the deleted document
    POST   /api/v1/feedback              {"answer_id", "rating": "up"|"down", "correct_id": id|"none"}
    GET    /api/v1/health                → {"status": "ok", …} (details only when authorised)

OpenAPI docs: /docs (and /openapi.json).

Authentication (only when the server has a login configured; see ServerSettings): every endpoint
but health needs `Authorization: Bearer <api token>` (AGENT_HELPER_API_TOKEN) or HTTP Basic auth with
the page's username and password. Without a login the server only listens on localhost.

Upload status codes: 200 every file added or already present; 207 some failed; 400 all failed
(each result says why); 413 the request is larger than max_files × the per-file limit.

Any endpoint answers 503 {"detail": why} when the knowledge store cannot serve: its Chroma server is
not reachable (the message names its URL), a re-index is running, or it was built with another embedder.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Literal

from fastapi import APIRouter, Depends, File, HTTPException, UploadFile, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer
from pydantic import BaseModel, Field

from app.feedback import FeedbackError, FeedbackRecord, UnknownAnswer
from app.service import MAX_TICKET_CHARS, AgentHelper, AnswerJSON
from ingest.formats import expected_types
from retriever.registry import DocumentRecord
from retriever.store import StoreError

if TYPE_CHECKING:
    from ui.settings import ServerSettings

PREFIX = "/api/v1"


class MatchRequest(BaseModel):
    ticket: str = Field(min_length=1, max_length=MAX_TICKET_CHARS, description="The customer's message.")


class FeedbackRequest(BaseModel):
    answer_id: str = Field(description="From the match response.")
    rating: Literal["up", "down"] | None = Field(None, description="Left out: derived from correct_id.")
    correct_id: str | None = Field(
        None, description="The candidate id that was right, or 'none' (nothing matches: escalate)."
    )


class UploadResult(BaseModel):
    file: str = Field(description="The name the client sent.")
    status: Literal["added", "unchanged", "failed"]
    message: str
    error: str | None = None
    document: DocumentRecord | None = None


class UploadResponse(BaseModel):
    results: list[UploadResult]
    documents: int = Field(description="Documents in the knowledge base afterwards.")


_basic = HTTPBasic(auto_error=False, description="The page's username and password.")
_bearer = HTTPBearer(auto_error=False, description="The API token (AGENT_HELPER_API_TOKEN).")


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and secrets.compare_digest(a.encode(), b.encode())


def authorised(settings: "ServerSettings", basic: HTTPBasicCredentials | None,
               bearer: HTTPAuthorizationCredentials | None) -> bool:
    if not settings.auth_enabled:
        return True
    if bearer is not None and settings.api_token and _same(bearer.credentials, settings.api_token):
        return True
    return basic is not None and settings.check_login(basic.username, basic.password)


class Endpoints:
    """The API's handlers over one service; `build_router` maps them to paths."""

    def __init__(self, service: AgentHelper, settings: "ServerSettings"):
        self.service, self.settings = service, settings

    def require_auth(self, basic: HTTPBasicCredentials | None = Depends(_basic),
                     bearer: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
        if not authorised(self.settings, basic, bearer):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "sign in: Authorization: Bearer <token> or HTTP Basic",
                headers={"WWW-Authenticate": 'Bearer realm="agent-helper", Basic realm="agent-helper"'},
            )

    def health(self, basic: HTTPBasicCredentials | None = Depends(_basic),
               bearer: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> dict:
        """Liveness; with credentials (or no login configured) also the status line's facts."""
        body: dict = {"status": "ok", "model_loaded": self.service.model_loaded}
        if authorised(self.settings, basic, bearer):
            body.update(self.service.status())
        return body

    def match(self, request: MatchRequest) -> dict:
        """Find the FAQ that answers a ticket, or say escalate (the `ask --json` object)."""
        from reasoner.backends import ModelLoadError

        try:
            return self.service.ask(request.ticket).to_json_dict()
        except ValueError as error:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error
        except ModelLoadError as error:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(error)) from error

    def feedback(self, request: FeedbackRequest) -> dict:
        """👍/👎 on an answer and/or the right candidate's id ('none' = it should have escalated)."""
        try:
            return self.service.give_feedback(request.answer_id, request.rating, request.correct_id).to_dict()
        except UnknownAnswer as error:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from error
        except FeedbackError as error:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(error)) from error

    def documents(self) -> list[DocumentRecord]:
        return self.service.documents()

    def upload(self, files: list[UploadFile] = File(description=f"knowledge files: {expected_types()}")
               ) -> JSONResponse:
        """Add knowledge files; each file is added, found already present, or refused with its reason."""
        if len(files) > self.settings.max_files:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"at most {self.settings.max_files} files per request")
        results = [self._upload_one(upload_file) for upload_file in files]
        failed = sum(r.status == "failed" for r in results)
        code = 200 if not failed else 400 if failed == len(results) else 207
        body = UploadResponse(results=results, documents=len(self.service.documents()))
        return JSONResponse(body.model_dump(), status_code=code)

    def _upload_one(self, upload_file: UploadFile) -> UploadResult:
        name = upload_file.filename or ""
        result = self.service.upload(name, upload_file.file, self.settings.allowed_suffixes,
                                     max_bytes=self.settings.max_upload_bytes)
        return UploadResult(file=name, status=result.status, message=result.message().strip(), error=result.error,
                            document=result.document)

    def delete(self, doc_id: str) -> DocumentRecord:
        """Remove a document, its chunks and its uploaded file."""
        try:
            return self.service.delete(doc_id)
        except KeyError as error:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document with id {doc_id!r}") from error


def build_router(service: AgentHelper, settings: "ServerSettings") -> APIRouter:
    api = Endpoints(service, settings)
    router = APIRouter(prefix=PREFIX)
    router.add_api_route("/health", api.health, methods=["GET"], tags=["status"])
    guarded = APIRouter(dependencies=[Depends(api.require_auth)])
    guarded.add_api_route("/match", api.match, methods=["POST"], response_model=AnswerJSON, tags=["answers"])
    guarded.add_api_route("/feedback", api.feedback, methods=["POST"], response_model=FeedbackRecord,
                          tags=["answers"])
    guarded.add_api_route("/documents", api.documents, methods=["GET"], response_model=list[DocumentRecord],
                          tags=["documents"])
    guarded.add_api_route("/documents", api.upload, methods=["POST"], response_model=UploadResponse,
                          tags=["documents"],
                          responses={207: {"model": UploadResponse, "description": "some files failed"},
                                     400: {"model": UploadResponse, "description": "every file failed"},
                                     413: {"description": "request too large"}})
    guarded.add_api_route("/documents/{doc_id}", api.delete, methods=["DELETE"], response_model=DocumentRecord,
                          tags=["documents"])
    router.include_router(guarded)
    return router


def add_error_handlers(app) -> None:
    """StoreError → 503 with its one-line message, not a bare 500 (see the module docstring)."""

    async def store_unavailable(request, error: StoreError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)

    app.add_exception_handler(StoreError, store_unavailable)


class UploadLimit:
    """ASGI middleware: refuses a document upload request larger than `max_bytes` before it is spooled
    to disk (by Content-Length, and by counting the body when it is sent chunked)."""

    def __init__(self, app, max_bytes: int, path: str = f"{PREFIX}/documents"):
        self.app, self.max_bytes, self.path = app, max_bytes, path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") != self.path:
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._too_large(scope, receive, send)
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge()
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _TooLarge:
            if not started:
                await self._too_large(scope, receive, send)

    async def _too_large(self, scope, receive, send):
        response = JSONResponse(
            {"detail": f"request larger than {self.max_bytes / 2**20:g} MiB"},
            status_code=413,
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class SameOriginGuard:
    """ASGI middleware: a browser request that changes something under /api/ must come from this
    server's own origin. Without it, any web site an agent visits could post a multipart form (a
    CORS "simple request") to http://127.0.0.1:7860/api/v1/documents. Clients that send no Origin
    header (CRM systems, curl) are not affected."""

    SAFE = ("GET", "HEAD", "OPTIONS")

    def __init__(self, app, prefix: str = "/api/"):
        self.app, self.prefix = app, prefix

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] not in self.SAFE and scope["path"].startswith(self.prefix):
            headers = dict(scope.get("headers") or [])
            origin = headers.get(b"origin")
            if origin is not None and not _same_origin(origin.decode("latin-1"), headers.get(b"host", b"")):
                response = JSONResponse({"detail": "cross-site request refused"}, status_code=403)
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def _same_origin(origin: str, host: bytes) -> bool:
    from urllib.parse import urlsplit

    netloc = urlsplit(origin).netloc.lower()
    return bool(netloc) and netloc == host.decode("latin-1").lower()
