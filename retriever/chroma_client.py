"""Which Chroma the knowledge store talks to: embedded under the home folder, or a `chroma run` server.

Embedded (the default) keeps the chunks in `<home>/chroma`, readable by the processes of that home.
A server (`ChromaServer`, from `--chroma-url http://HOST:PORT`) lets app processes with different
homes, on any hosts, share one knowledge base. Its failures are network failures: `reachable` turns
them into one message naming the URL, so a server that is down or restarting never surfaces as a
traceback. chromadb's client reconnects by itself once the server is back.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 8000, "https": 443}
"""`chroma run` listens on 8000 unless told otherwise; https servers sit behind a proxy on 443."""


@dataclass(frozen=True)
class ChromaServer:
    """A running Chroma server, e.g. `ChromaServer.from_url("http://127.0.0.1:8000")`."""

    host: str
    port: int
    ssl: bool = False

    @classmethod
    def from_url(cls, url: str) -> "ChromaServer":
        """ValueError saying what is wrong for anything but http(s)://HOST[:PORT][/]."""
        parts = urlsplit(url.strip())
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"Chroma server URL {url!r}: expected http://HOST:PORT (or https://HOST[:PORT])")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError(f"Chroma server URL {url!r}: expected only a scheme, a host and a port")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError as error:  # urlsplit checks the port only when asked for it
            raise ValueError(f"Chroma server URL {url!r}: {error}") from None
        return cls(parts.hostname, port, parts.scheme == "https")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.ssl else 'http'}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.url

    def unreachable(self, reason: object) -> str:
        return (f"Chroma server at {self.url} is not reachable: {reason} (is `chroma run` serving there? "
                "see --chroma-url)")

    @contextmanager
    def reachable(self, error: Callable[[str], Exception]) -> Iterator[None]:
        """Network failures inside become `error(message naming the URL)`; other errors pass."""
        import httpx  # chromadb's HTTP client

        try:
            yield
        except httpx.TransportError as failure:  # refused, reset, timed out: down or restarting
            raise error(self.unreachable(failure)) from failure

    def connect(self, error: Callable[[str], Exception]):
        """A chromadb HttpClient; `error(message)` is raised when the server cannot be reached."""
        import chromadb
        import httpx
        from chromadb.config import Settings

        with self.reachable(error):
            try:
                return chromadb.HttpClient(host=self.host, port=self.port, ssl=self.ssl,
                                           settings=Settings(anonymized_telemetry=False))
            except ValueError as failure:  # the client's own heartbeat on connecting failed
                if isinstance(failure.__context__, httpx.TransportError):
                    raise error(self.unreachable(failure.__context__)) from failure
                raise


def embedded_client(home: Path):
    """The embedded Chroma of one home (`<home>/chroma`)."""
    import chromadb
    from chromadb.config import Settings

    return chromadb.PersistentClient(path=str(home / "chroma"), settings=Settings(anonymized_telemetry=False))


__all__ = ["ChromaServer", "embedded_client"]
