"""POST alerts to a webhook from a background thread, so a slow or failing endpoint never
delays the terminal.

Each alert is one JSON POST. The body carries the line as ``text`` (Slack incoming webhooks)
and ``content`` (Discord) next to the message's own fields, so a chat webhook shows the line
and a program gets the data. A failed POST (network error, HTTP 5xx or 429) is retried with
backoff up to ``attempts`` times; a 4xx other than 429 is not retried (the request itself is
wrong). Every give-up is one line on stderr. At most ``capacity`` alerts wait; beyond that the
oldest is dropped, with a line saying so.

Delivery is at least once: an endpoint that took the alert but answered after ``timeout_s`` gets
it again. Every POST of one alert carries the same ``Idempotency-Key`` header (a digest of the
body), so a receiver that keeps recent keys can drop the repeats.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from shared.backoff import Backoff

logger = logging.getLogger(__name__)

_STOP = object()


def check_url(url: str) -> str:
    """``url`` when it is one a webhook can be POSTed to; ValueError otherwise."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https:// (got {url!r})")
    return url


class WebhookSender:
    def __init__(self, url: str, *, attempts: int = 5, timeout_s: float = 5.0, capacity: int = 1000,
                 backoff: Backoff | None = None) -> None:
        self.url = check_url(url)
        self.attempts = attempts
        self.timeout_s = timeout_s
        self.backoff = backoff or Backoff(base_s=0.5, cap_s=10.0)
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self._thread.start()

    def send(self, body: dict[str, Any]) -> None:
        """Queue one alert (never blocks: the oldest waiting alert makes room if needed)."""
        payload = {"text": body.get("text", ""), "content": body.get("text", ""), **body}
        while True:
            try:
                self._queue.put_nowait(payload)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                    logger.warning("webhook: %d alerts waiting; dropped the oldest", self._queue.maxsize)
                except queue.Empty:
                    pass

    @property
    def waiting(self) -> int:
        """Alerts queued and not yet delivered (nor given up)."""
        return self._queue.qsize()

    def close(self, wait_s: float = 10.0) -> None:
        """Deliver what waits for at most ``wait_s``, then stop; what is left is dropped, with a
        line saying how many."""
        deadline = time.monotonic() + wait_s
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=wait_s)
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        self._closing.set()  # no more waiting between retries, no next alert
        self._thread.join(timeout=self.timeout_s + 1)
        left = sum(1 for item in list(self._queue.queue) if item is not _STOP)
        if left:
            self.dropped += left
            logger.warning("webhook: %d alert(s) not delivered before exit", left)

    def _run(self) -> None:
        while not self._closing.is_set():
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._deliver(item)
            except Exception:  # a failure nobody foresaw must not silence every later alert
                self.failed += 1
                logger.exception("webhook: could not deliver an alert")

    def _deliver(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        key = hashlib.sha256(data).hexdigest()[:32]
        self.backoff.reset()
        for attempt in range(1, self.attempts + 1):
            problem = self._post(data, key)
            if problem is None:
                self.delivered += 1
                return
            retry = not problem.startswith("HTTP 4") or problem.startswith("HTTP 429")
            if not retry or attempt == self.attempts or self._closing.wait(self.backoff.next_delay()):
                break
        self.failed += 1
        logger.warning("webhook: gave up on an alert after %d attempt(s): %s", attempt, problem)

    def _post(self, data: bytes, key: str) -> str | None:
        """None when delivered, else what went wrong."""
        request = urllib.request.Request(self.url, data=data, method="POST",
                                         headers={"Content-Type": "application/json", "Idempotency-Key": key})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # http(s): see __init__
                response.read()
            return None
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code} {exc.reason}"
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}"  # a cut answer (IncompleteRead), a bad status line
