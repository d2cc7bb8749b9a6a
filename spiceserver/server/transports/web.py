"""The static web client (``--web DIR``), served on the SPICE port itself.

GET only (the caller answers other methods 405); no directory listing; no path outside DIR
(``..``, absolute paths, NUL, symlinks leading out are all refused); files up to
:data:`MAX_FILE_BYTES`; content types from a fixed table.  Files are read once and kept, up to
:data:`MAX_CACHE_BYTES` in all, so a request costs no disk I/O on the event loop after the first.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import unquote, urlsplit

from spiceserver.errors import ConfigError

__all__ = ["DEBIAN_SPICE_HTML5", "MAX_FILE_BYTES", "WebRoot", "default_web_root"]

logger = logging.getLogger("spiceserver.web")

#: Where Debian's ``spice-html5`` package installs the client.
DEBIAN_SPICE_HTML5 = Path("/usr/share/spice-html5")
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_CACHE_BYTES = 32 * 1024 * 1024
#: What a directory request serves, in order of preference.
INDEX_FILES = ("index.html", "spice_auto.html")

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".ico": "image/vnd.microsoft.icon",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
    ".map": "application/json",
}

Reply = tuple[int, str, bytes, dict[str, str]]


def default_web_root() -> Path:
    """Debian's spice-html5, or a clear error naming the package."""
    if (DEBIAN_SPICE_HTML5 / "spice_auto.html").is_file():
        return DEBIAN_SPICE_HTML5
    raise ConfigError(
        f"--web without a directory serves Debian's spice-html5, which is not installed "
        f"(no {DEBIAN_SPICE_HTML5}/spice_auto.html): apt-get install spice-html5, "
        "or give --web DIR"
    )


class WebRoot:
    """A directory of static files served by GET."""

    def __init__(self, directory: str | Path) -> None:
        root = Path(directory)
        if not root.is_dir():
            raise ConfigError(f"--web {directory}: not a directory")
        self.root = root.resolve()
        self._cache: dict[Path, tuple[bytes, str]] = {}
        self._cached_bytes = 0

    def get(self, target: str) -> Reply:
        """Status, reason, body and extra headers for a request target (path and query)."""
        path = self._resolve(target)
        if path is None:
            return 404, "Not Found", b"not found\n", {}
        cached = self._cache.get(path)
        if cached is None:
            try:
                size = path.stat().st_size
                if size > MAX_FILE_BYTES:
                    return 404, "Not Found", b"not found\n", {}
                body = path.read_bytes()
            except OSError:
                return 404, "Not Found", b"not found\n", {}
            content_type = CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
            cached = (body, content_type)
            if self._cached_bytes + len(body) <= MAX_CACHE_BYTES:
                self._cache[path] = cached
                self._cached_bytes += len(body)
        body, content_type = cached
        return (
            200,
            "OK",
            body,
            {
                "Content-Type": content_type,
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-cache",
            },
        )

    def _resolve(self, target: str) -> Path | None:
        """The file a target names inside the root, or None (outside it, hidden, missing)."""
        raw = urlsplit(target).path
        try:
            path = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            return None
        if "\0" in path or "\\" in path or not path.startswith("/"):
            return None
        parts = [part for part in path.split("/") if part]
        if any(part in (".", "..") or part.startswith(".") for part in parts):
            return None  # no traversal, no hidden files
        candidate = self.root.joinpath(*parts) if parts else self.root
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not resolved.is_relative_to(self.root):
            return None  # a symlink leading out
        if resolved.is_dir():
            for index in INDEX_FILES:
                if (resolved / index).is_file():
                    return resolved / index
            return None  # no directory listings
        return resolved if resolved.is_file() else None
