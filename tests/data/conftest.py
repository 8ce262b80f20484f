"""Shared fixtures for the data-layer tests: an isolated environment, the shared data, a local HTTP server."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test sees the user's cache, data directory or the network: cache in tmp, downloads off."""
    cache_home = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.delenv("DLCHAPTER_DATA_DIR", raising=False)
    monkeypatch.delenv("DLCHAPTER_DATA_URL", raising=False)
    monkeypatch.setenv("DLCHAPTER_OFFLINE", "1")
    return cache_home / "dlchapter"


@pytest.fixture
def shared_data() -> Path:
    """The real data sets beside the checkout (../shared/data); skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data directory {SHARED_DATA} is absent")
    return SHARED_DATA


@dataclass
class Route:
    """What the local server answers for one path: the body, or a body cut after `cut_after` bytes."""

    body: bytes
    cut_after: int | None = None


@dataclass
class LocalServer:
    url: str
    routes: dict[str, Route]
    requests: list[str] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        state = self.server.state  # type: ignore[attr-defined]
        state.requests.append(self.path)
        route = state.routes.get(self.path)
        if route is None:
            self.send_error(404, "not found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        sent = route.body if route.cut_after is None else route.body[: route.cut_after]
        self.wfile.write(sent)
        self.wfile.flush()
        if route.cut_after is not None:
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    """An HTTP server on 127.0.0.1 in a thread; tests fill `routes` ("/name" -> Route)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    state = LocalServer(url=f"http://127.0.0.1:{server.server_address[1]}", routes={})
    server.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
