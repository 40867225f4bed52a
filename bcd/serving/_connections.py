"""A deadline on every request head: connections that trickle their headers are closed.

uvicorn closes a keep-alive connection that sends nothing for
``timeout_keep_alive`` seconds, but its timer is cancelled by any byte, and a
fresh connection has no timer at all: a client that opens a connection and
sends a partial request head, one header line every few seconds (slowloris),
holds it forever. :func:`head_timeout_protocol` wraps uvicorn's HTTP protocol
(httptools or h11, whichever ``"auto"`` picks) so that a connection must
complete its first request head within ``header_timeout_s`` of opening, and
each later head within one to two of them:

- a new connection gets one timer when it is made;
- when the timer fires and no request head completed since it was armed, and
  no request is being answered, the connection is closed;
- otherwise, if the connection is waiting for its next head, the timer is
  armed again; if a request is being answered, it is dropped, and the first
  bytes of the next head arm a new one.

Request bodies are bounded elsewhere (``request_timeout_s``,
``slide_upload_timeout_s``). A normal request costs no timer of its own: its
head arrives in one read, and the connection's one timer finds a new request
when it fires.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

logger = logging.getLogger(__name__)


@functools.cache
def head_timeout_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class with a deadline on each request head.

    Args:
        header_timeout_s: Seconds a connection has to send a complete request
            head, from its opening or from the first bytes of the next head.

    Returns:
        A protocol class to pass as ``uvicorn.Config(http=...)``.
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    base: Any = AutoHTTPProtocol

    class HeadTimeoutProtocol(base):  # type: ignore[misc, valid-type]
        """uvicorn's protocol, closing connections whose request head is late."""

        _head_timer: asyncio.TimerHandle | None = None
        _armed_cycle: object = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # The first bytes of a head that did not complete in this read.
            if self._head_timer is None and self._awaiting_head():
                self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

        def _awaiting_head(self) -> bool:
            cycle = self.cycle
            return (cycle is None or cycle.response_complete) and not self.transport.is_closing()

        def _arm_head_timer(self) -> None:
            self._armed_cycle = self.cycle
            self._head_timer = self.loop.call_later(header_timeout_s, self._head_deadline)

        def _head_deadline(self) -> None:
            self._head_timer = None
            if not self._awaiting_head():
                return  # a request is being answered (or the connection is closing)
            if self.cycle is self._armed_cycle:
                logger.debug(
                    "closing a connection whose request head took over %s s", header_timeout_s
                )
                self.transport.close()
            else:
                self._arm_head_timer()  # a request finished meanwhile; the next head is due

    HeadTimeoutProtocol.__name__ = HeadTimeoutProtocol.__qualname__ = (
        f"HeadTimeout{AutoHTTPProtocol.__name__}"
    )
    return HeadTimeoutProtocol
