"""Serving the UI with uvicorn: in the foreground (``trainwire ui``) or beside a worker or the demo."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING

from trainwire.errors import ConfigError, MissingExtraError
from trainwire.ui.auth import Credentials, check_bind

if TYPE_CHECKING:
    from trainwire.store.clickhouse import Store

DEFAULT_PORT = 8050


class UiServer:
    """The UI over ``store`` on ``host:port`` (checked by :func:`check_bind` first)."""

    def __init__(
        self, store: Store, host: str = "127.0.0.1", port: int = DEFAULT_PORT, credentials: Credentials | None = None
    ):
        check_bind(host, credentials)
        try:
            import uvicorn
        except ImportError as exc:
            raise MissingExtraError("ui", "trainwire's web UI") from exc

        from trainwire.ui.app import create_app  # a MissingExtraError without Starlette

        config = uvicorn.Config(
            create_app(store, credentials), host=host, port=port, log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        self.host, self.port = host, port

    @property
    def url(self) -> str:
        """The address to open in a browser."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def run(self) -> None:
        """Serve in this thread until Ctrl+C (SIGINT) or SIGTERM (a port in use ends it with uvicorn's message)."""
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises the signal again once it has stopped
            self._server.run()

    def start(self, timeout_s: float = 10.0) -> UiServer:
        """Serve on a background thread; return once it listens."""
        self._thread = threading.Thread(target=self._server.run, name="trainwire-ui", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError("--ui-port", f"cannot serve on {self.host}:{self.port} (in use?)")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop serving (after the requests under way)."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
