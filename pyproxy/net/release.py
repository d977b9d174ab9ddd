"""The end of a client's hold on a server: at the end of a transaction (keep it, hand it to
the next queued client, or return it to the pool) and when the client leaves or is ended. A
mixin of ``ClientConn``, kept apart so that the release policy of the three modes reads in one
place."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyproxy.net import blocks, sessions
from pyproxy.proto.codes import IDLE
from pyproxy.proto.phases import ClientPhase, ServerPhase
from pyproxy.session.copyflow import complete_cut_copy_data

if TYPE_CHECKING:
    from pyproxy.net.server import ServerConn

C = ClientPhase


class Releasing:
    """``ClientConn``'s release methods (``self`` is the client)."""

    server: Any
    pool: Any

    def release_server(self: Any, reply: bytes) -> None:
        """The transaction is over: ``reply`` (its last bytes, up to ReadyForQuery) goes to the
        client, and the server is kept, passed on or returned."""
        server = self.server
        if server is None:
            if reply:
                self.transport.write(reply)
            return
        pool = self.pool
        if pool is not None:
            pool.xact_count += 1
            if self.check_state or self.pinned or self.deferred:
                sessions.state_first(self, server, reply)
                return
        self.let_go(server, reply)

    def let_go(self: Any, server: ServerConn, reply: bytes) -> None:
        """``release_server`` once the transaction is counted: keep the server while nobody
        waits, pass it to the next queued client, or return it."""
        pool = self.pool
        now = server.ready_at
        self.last_active = now
        if pool is not None and server.status == IDLE and not self.skip and not server.stale:
            if pool.waiters:
                # Under load: straight to the next queued client, whose request is sent before
                # this client's reply so that PostgreSQL gets to work sooner.
                self.server = None
                self.move(C.READY)
                pool.hand_over(server, now)
                if reply:
                    self.transport.write(reply)
                self.refuse_deferred()
                return
            if reply:
                self.transport.write(reply)
            if not self.deferred and pool.keeps(server):
                return  # kept until this client's next transaction, unless the pool needs it
        elif reply:
            self.transport.write(reply)
        self.server = None
        self.move(C.READY)
        if self.skip:  # released inside a CopyData the server no longer wants
            self.discard, self.skip = self.skip, 0
            padding = complete_cut_copy_data(self.discard)
            if padding is None or server.transport is None or server.transport.is_closing():
                server.stale = True
            else:
                server.transport.write(padding)
        if server.status != IDLE:
            # Statement mode: a transaction block opened where pyproxy could not see it
            # coming. The release path rolls it back; the client is in an aborted block.
            blocks.enter(self)
        server.unlink()
        if pool is None:
            server.close("pool gone")
        else:
            pool.release(server, now=now)
        self.refuse_deferred()

    def refuse_deferred(self: Any) -> None:
        if self.deferred:
            rest, self.deferred = self.deferred, b""
            blocks.enter(self, rest)

    def _give_back(self: Any, server: ServerConn) -> None:
        """This client lets go of ``server`` (it left, or is being ended): a server with a query
        running is cancelled and closed; otherwise it goes through the pool's release path,
        which rolls back, resets and waits for cancels as needed."""
        pool = server.pool
        if pool is None:
            server.unlink()
            server.close("no pool")
            return
        if server.pending > 0 or self.open_ext or self.skip:
            # A query is still running: cancel it so the backend does not linger, then close.
            server.unlink()
            self.proxy.cancels.cancel_backend(server)
            server.close("client disconnected with a query in progress")
            return
        if self.session_mode:
            server.reset_sql = pool.settings.server_reset_query
        elif self.pinned:
            # What pinned it (LISTEN, temporary tables, ...) must not reach the next client.
            server.reset_sql = "DISCARD ALL"
            self.pinned = ()
            pool.pinned.discard(self)
        if server.phase in (ServerPhase.SYNC, ServerPhase.READBACK):
            server.client = None  # running pyproxy's own query for us: released after it
            return
        server.unlink()
        pool.release(server)
