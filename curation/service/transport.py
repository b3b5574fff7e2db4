"""How ``curate serve`` holds up against slow clients and sits behind a TLS proxy: the uvicorn options.

Slow clients (slowloris). uvicorn's h11 protocol has a keep-alive timeout (idle time *between* requests) but no
limit on how long a client may take to send a request head, and no limit on open connections: thousands of
clients that each send one header line every few seconds hold a file descriptor each forever, until accept()
fails with EMFILE and normal requests wait in the kernel's queue until they time out. ``guarded_h11_protocol``
adds both limits to uvicorn's own h11 protocol:

- a request head (request line and headers) must be complete within ``header_timeout_s`` of the connection
  opening, or of its first byte on a kept-alive connection; otherwise the connection is closed;
- at most ``max_connections`` connections are open: past that, the oldest connection that is not waiting for
  the app (its head or body not fully received yet, or idle between requests) is closed to make room, so a
  client that sends its request at once still gets in during a storm, while slow clients only churn.

``uvicorn_options`` turns ``ServiceSettings`` into ``uvicorn.Config`` keyword arguments: that protocol, the
keep-alive timeout, uvicorn's own concurrency limit, a bounded head size, an accept backlog of a quarter of the
connection limit (asyncio accepts a whole backlog's worth of sockets before any protocol sees them, so the
process needs descriptors for those too: ``fds_needed``), a soft descriptor limit raised to fit, and the
proxy-header trust.

The kernel's accept queue. asyncio passes that same small backlog to ``listen()``, and a storm fills so short a
queue at once. Past it Linux drops the client's last handshake packet: the client believes it is connected, the
server has not seen the connection, and only the kernel's retries (after 1, 3, 7, 15 s) bring it in, so no server
deadline can run for it. ``GuardedServer`` widens the queue after asyncio's ``listen()`` to ``LISTEN_QUEUE``
(the kernel caps it at ``net.core.somaxconn``): queued connections cost no descriptor, the accept batch stays
small, and a queued connection waits for the server's next turns instead of the kernel's retries.

Behind a TLS proxy. With ``forwarded_allow_ips`` set, uvicorn's proxy-headers middleware takes the scheme
(``X-Forwarded-Proto``) and client address (``X-Forwarded-For``) from requests whose direct peer is one of those
addresses or networks, and from no one else: the same-origin check then compares a browser's
``Origin: https://host`` with an https request, and the login cookie is ``Secure``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from curation.service.settings import ServiceSettings

log = logging.getLogger(__name__)

#: Largest request head kept while it is incomplete (h11's own default, made explicit): a client that sends more
#: without finishing its head gets 400. With ``max_connections`` open, heads hold at most this many bytes each.
MAX_HEAD_BYTES = 16 * 1024
#: Descriptors kept free for everything else the process opens (run files, sandboxes, the job table, Ray, logs).
FD_RESERVE = 256
#: The kernel's accept queue, asked for after asyncio's ``listen()`` (see the module docstring); Linux caps it at
#: ``net.core.somaxconn`` (4096 by default since Linux 5.4).
LISTEN_QUEUE = 4096
#: At most one warning per this many seconds about connections closed for being slow: a storm must not also
#: flood the log.
WARN_EVERY_S = 10.0


def guarded_h11_protocol(header_timeout_s: float, max_connections: int) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for each request head and a cap on open connections (see the module
    docstring). A new class per call: the open-connection table is per server."""

    class GuardedH11Protocol(H11Protocol):
        #: Open connections, oldest first (dict order is insertion order): who is closed first past the cap.
        open_connections: ClassVar[dict[GuardedH11Protocol, None]] = {}
        closed_slow: ClassVar[int] = 0  # connections closed by the head deadline or the cap, since the last warning
        last_warning: ClassVar[float] = 0.0
        head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_head_timer()
            table = type(self).open_connections
            table[self] = None
            if len(table) > max_connections:
                self._make_room()

        def connection_lost(self, exc: Exception | None) -> None:
            type(self).open_connections.pop(self, None)
            self._cancel_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.transport.is_closing():
                return
            if self.conn.their_state is h11.IDLE:
                # Still in a head (or the first bytes of the next one on a kept-alive connection, which uvicorn's
                # keep-alive timer stopped covering when they arrived): the deadline runs from its first byte.
                self._arm_head_timer()
            else:
                self._cancel_head_timer()  # the head is complete; the app (and the body limit) take over

        def handle_websocket_upgrade(self, event: h11.Request) -> None:
            # Not reached while uvicorn_options turns websockets off; should it be, the connection leaves this
            # protocol for good, so it must leave the table too (a stale entry could never be closed for room).
            type(self).open_connections.pop(self, None)
            self._cancel_head_timer()
            super().handle_websocket_upgrade(event)

        def _arm_head_timer(self) -> None:
            if self.head_timer is None:
                self.head_timer = self.loop.call_later(header_timeout_s, self._head_timed_out)

        def _cancel_head_timer(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _head_timed_out(self) -> None:
            self.head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._close_slow()

        def _waits_on_client(self) -> bool:
            """Nothing of this connection is with the app: its request is not fully received, or it is idle."""
            if self.conn.their_state is h11.SEND_BODY:
                return True
            return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

        def _make_room(self) -> None:
            """Close the oldest connection that waits on its client; the new one itself if every other is busy."""
            for other in type(self).open_connections:
                if other is not self and other._waits_on_client() and not other.transport.is_closing():
                    other._close_slow()
                    return
            self._close_slow()

        def _close_slow(self) -> None:
            # Out of both tables now, not when the loop gets round to connection_lost: uvicorn's concurrency check
            # and the cap must not count a connection that is already going.
            type(self).open_connections.pop(self, None)
            self.connections.discard(self)
            self._cancel_head_timer()
            self.transport.close()
            cls = type(self)
            cls.closed_slow += 1
            now = time.monotonic()
            if now - cls.last_warning >= WARN_EVERY_S:
                log.warning("closed %d connections that did not send a request head within %.1f s or were the "
                            "oldest waiting past --max-connections %d (slow clients?)", cls.closed_slow,
                            header_timeout_s, max_connections)
                cls.closed_slow, cls.last_warning = 0, now

    return GuardedH11Protocol


def accept_backlog(max_connections: int) -> int:
    """The listen backlog, which asyncio also uses as the number of sockets it accepts at once, before any
    protocol sees them (uvicorn's default 2048, or less)."""
    return max(8, min(2048, max_connections // 4))


def fds_needed(max_connections: int) -> int:
    """Descriptors the server may hold at once. A socket accepted in one event-loop turn reaches the protocol two
    turns later, and a socket closed to make room is released a turn after that: up to about four accept batches
    are in flight on top of the open connections."""
    return max_connections + 4 * accept_backlog(max_connections) + FD_RESERVE


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft descriptor limit to ``needed`` if the hard limit allows; the limit now in force."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def widen_listen_queue(listener: socket.socket | asyncio.trsock.TransportSocket, queue: int = LISTEN_QUEUE) -> None:
    """Call ``listen(queue)`` again on a listening socket: the kernel resizes its accept queue in place. asyncio
    hands out wrappers without ``listen``, so this goes through a duplicate descriptor of the same socket."""
    with listener.dup() as dup:
        dup.listen(queue)


class GuardedServer(uvicorn.Server):
    """uvicorn's server with each listening socket's accept queue widened once it listens (module docstring)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        for server in self.servers:  # set by every startup path of uvicorn's; a change should fail loudly here
            for listener in server.sockets:
                widen_listen_queue(listener)


def uvicorn_options(settings: ServiceSettings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` implementing the settings' transport limits and proxy trust."""
    max_connections = settings.max_connections
    needed = fds_needed(max_connections)
    limit = raise_fd_limit(needed)
    if limit < needed:
        # Past the descriptor limit accept() fails, and asyncio stops accepting for a second each time: normal
        # requests wait (the incident this guards against). Fewer connections than asked for is the lesser evil.
        while max_connections > 1 and fds_needed(max_connections) > limit:
            max_connections = max(1, max_connections * 3 // 4)
        log.warning("--max-connections %d needs %d file descriptors, the hard limit is %d: serving at most %d "
                    "connections (raise `ulimit -n` to serve more)", settings.max_connections, needed, limit,
                    max_connections)
    backlog = accept_backlog(max_connections)
    options: dict[str, Any] = {
        "http": guarded_h11_protocol(settings.header_timeout_s, max_connections),
        "timeout_keep_alive": settings.keep_alive_s,
        # uvicorn answers 503 when open connections *or* running requests reach this. Counting connections, it
        # would refuse the normal request during a storm; the protocol keeps connections at max_connections, so
        # only requests still running after their client left can reach it.
        "limit_concurrency": max_connections + 1,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "backlog": backlog,
        "ws": "none",  # the service has no websocket routes: an Upgrade is an ordinary request, never a new protocol
        "proxy_headers": bool(settings.forwarded_allow_ips),
    }
    if settings.forwarded_allow_ips:
        options["forwarded_allow_ips"] = list(settings.forwarded_allow_ips)
    return options
