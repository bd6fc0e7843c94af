"""Client-side rate limiting of API calls (`plugin.kubernetes.qps` / `burst`).

A busy agent (many deployments, status polls, rollout waits) must not flood
the API server: every `KubeClient` request takes a token first.
"""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """Client-side rate limit: `qps` tokens per second, at most `burst` at once."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take one token, sleeping until one is available."""
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.qps)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                delay = (1 - self._tokens) / self.qps
            time.sleep(delay)
