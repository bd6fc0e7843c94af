"""A Kubernetes API server stand-in: real REST API over HTTP/1.1, JSON only.

Entry points: `KubeServer` (server.py) and `serve()` below."""

from __future__ import annotations

from .server import KubeServer

__all__ = ["KubeServer"]
