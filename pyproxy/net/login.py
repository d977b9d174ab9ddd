"""A client's login: the startup packet and its parameters, the authentication exchange (with the
failed-login throttle), joining the pool, and the greeting (built once per pool and set of
startup parameters)."""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import struct
import time
from typing import TYPE_CHECKING

from pyproxy.auth.exchange import ClientExchange
from pyproxy.auth.scram import AuthFailed
from pyproxy.errors import (
    FEATURE_NOT_SUPPORTED,
    INSUFFICIENT_PRIVILEGE,
    INTERNAL_ERROR,
    INVALID_AUTHORIZATION,
    INVALID_CATALOG_NAME,
    INVALID_PASSWORD,
    PROTOCOL_VIOLATION,
    TOO_MANY_CONNECTIONS,
    PgError,
    ProtocolError,
)
from pyproxy.net import tls_accept
from pyproxy.proto import messages as m
from pyproxy.proto.codes import (
    CANCEL_REQUEST_CODE,
    ENCRYPTION_REFUSED,
    GSSENC_REQUEST_CODE,
    SSL_REQUEST_CODE,
    TERMINATE,
)
from pyproxy.proto.framing import MessageFramer, StartupFramer
from pyproxy.proto.phases import ClientPhase
from pyproxy.session import params as P

if TYPE_CHECKING:
    from pyproxy.config import ClusterConfig
    from pyproxy.net.client import ClientConn
    from pyproxy.net.state import ProxyState
    from pyproxy.pool.pool import Pool

log = logging.getLogger("pyproxy.login")
C = ClientPhase
CONSOLE_KEY = "\x00console"  # where console users' SCRAM secrets are cached (no cluster id)
MAX_GREETINGS = 64  # login greetings remembered per pool (one per set of startup parameters)

# Tools known by the application_name they send, that need their statements on one server.
DUMP_TOOLS = frozenset(("pg_dump", "pg_dumpall", "pg_restore"))


class Login:
    """From the first byte of a client connection to its first ReadyForQuery."""

    def __init__(self, client: ClientConn) -> None:
        self.client = client
        self.startup: StartupFramer | None = StartupFramer()
        self.framer: MessageFramer | None = None
        self.exchange: ClientExchange | None = None
        self.failing = False  # a failed login whose answer the throttle delays
        self.fresh = True  # nothing read yet (a ClientHello now is direct TLS)
        self.tls: ssl.SSLObject | None = None  # the TLS session, once upgraded
        self.channel_binding: bytes | None = None  # its tls-server-end-point data
        self.upgrading: list[bytes] | None = None  # bytes decrypted before the upgrade ended
        self.cluster_id = ""

    def feed(self, data: bytes) -> None:
        """Bytes from the client before it is logged in; PgError ends the login."""
        client = self.client
        if self.upgrading is not None:
            self.upgrading.append(data)
        elif client.phase is C.STARTUP:
            if self.fresh:
                self.fresh = False
                if tls_accept.direct_tls(self, data):
                    return
            self._startup(data)
        elif self.framer is not None:
            for kind, body in self.framer.feed(data):
                if client.phase is C.AUTH and not self.failing:
                    if self.exchange is None:  # auth_query still running: nothing asked yet
                        raise ProtocolError("unexpected message before the authentication request")
                    self._auth_message(kind, body)
                elif kind == TERMINATE:
                    client.transport.close()
                    return
                elif not self.failing:
                    raise ProtocolError(f"unexpected message {chr(kind)!r} during login")

    # ---- the startup packet ---------------------------------------------------------------------

    def _startup(self, data: bytes) -> None:
        client = self.client
        assert self.startup is not None
        got = self.startup.feed(data)
        if got is None:
            return
        code, payload, rest = got
        if code == SSL_REQUEST_CODE:
            tls_accept.ssl_request(self, rest)
            return
        if code == GSSENC_REQUEST_CODE:
            if rest:
                raise ProtocolError("received unencrypted data after SSL request")
            client.transport.write(ENCRYPTION_REFUSED)
            return
        if code == CANCEL_REQUEST_CODE:
            if len(payload) == 8:
                client.proxy.cancels.handle(*struct.unpack("!II", payload))
            client.close_quietly()
            return
        major, minor = code >> 16, code & 0xFFFF
        if major != 3:
            raise PgError(
                PROTOCOL_VIOLATION,
                f"unsupported frontend protocol {major}.{minor}: pyproxy supports 3.0",
                fatal=True,
            )
        tls_accept.check_startup(self)
        try:
            params = m.parse_startup_params(payload)
        except ValueError as exc:
            raise ProtocolError(f"invalid startup packet: {exc}") from None
        self.startup = None
        self._begin(params, minor)
        if rest:
            self.feed(rest)

    def _begin(self, params: dict[str, str], minor: int) -> None:
        client = self.client
        proxy = client.proxy
        if len(proxy.clients) > proxy.config.proxy.max_client_conn:
            raise PgError(
                TOO_MANY_CONNECTIONS, "no more connections allowed (max_client_conn)", fatal=True
            )
        client.user = params.get("user", "")
        if not client.user:
            raise PgError(
                INVALID_AUTHORIZATION, "no PostgreSQL user name specified in startup packet",
                fatal=True,
            )  # fmt: skip
        tls_accept.check_certificate(self, client.user)
        client.database = params.get("database") or client.user
        unsupported = [k for k in params if k.startswith("_pq_.")]
        if minor > 0 or unsupported:
            client.transport.write(m.negotiate_protocol_version(0, unsupported))
        client.params = self._session_parameters(params)
        console = proxy.console
        if console is not None and client.database in console.databases:
            # The admin console: any configured user's password; the role is checked after.
            client.move(C.AUTH)
            self.framer = MessageFramer(proxy.config.proxy.max_packet_size)
            self._start_auth(None, "")
            return
        found = proxy.registry.find_pool(client.database)
        if found is None:
            raise PgError(
                INVALID_CATALOG_NAME,
                f'database "{client.database}" does not exist',
                detail="pyproxy has no pool with this name; the database name selects the pool",
                fatal=True,
            )
        cluster = proxy.registry.cluster(found[0])
        assert cluster is not None
        client.move(C.AUTH)
        self.framer = MessageFramer(proxy.config.proxy.max_packet_size)
        self._start_auth(cluster, found[1].db)

    def _session_parameters(self, params: dict[str, str]) -> dict[str, str]:
        """The startup packet's session parameters, as PostgreSQL takes them: keys and
        ``options=-c name=value`` items. Tracked (reported) parameters are returned; the others
        go to the client's ``options``, applied on its first server (a value PostgreSQL refuses
        ends the client there); those in ``ignore_startup_parameters`` are dropped."""
        client = self.client
        cfg = client.proxy.config.proxy
        tracked = client.proxy.tracked
        ignored = {k.lower() for k in cfg.ignore_startup_parameters}
        out: dict[str, str] = {}
        items: list[tuple[str, str]] = []
        for key, value in params.items():
            low = key.lower()
            if low in ("user", "database") or low.startswith("_pq_."):
                continue
            if low == "replication":
                raise PgError(
                    PROTOCOL_VIOLATION,
                    "replication connections are not supported by pyproxy",
                    hint="connect to PostgreSQL directly for replication",
                    fatal=True,
                )
            if low == "options":
                if "options" not in ignored:
                    items.extend(P.parse_options(value).items())
            else:
                items.append((low, value))
        for name, value in items:
            if name in ignored:
                continue
            if name in tracked:
                out[name] = value
            else:
                client.options[name] = value
        return out

    # ---- authentication -------------------------------------------------------------------------

    def _start_auth(self, cluster: ClusterConfig | None, db: str) -> None:
        """Authenticate the client against its stored secret in ``cluster`` (looked up with
        auth_query when the cluster has one and does not list the user); ``cluster`` None: the
        admin console, where any configured user's password counts (the role is checked after)."""
        client = self.client
        proxy = client.proxy
        wait = proxy.throttle.check(client.address, client.user, time.monotonic())
        if wait is not None:
            raise PgError(
                INVALID_AUTHORIZATION,
                "too many failed login attempts from this address",
                hint=f"try again in {max(1, math.ceil(wait))} s",
                fatal=True,
            )
        if cluster is None:
            self.cluster_id = CONSOLE_KEY
            self._exchange(_console_password(proxy, client.user))
            return
        self.cluster_id = cluster.id
        known = cluster.user(client.user)
        if known is None and cluster.auth_user:
            task = proxy.spawn(self._look_up(cluster, db))
            task.add_done_callback(self._looked_up)
            return
        self._exchange(known.password if known is not None else None)

    async def _look_up(self, cluster: ClusterConfig, db: str) -> None:
        """A user the config does not list: its stored secret from auth_query, then the
        exchange as for a listed one (no secret: it fails like a wrong password)."""
        client = self.client
        secret = await client.proxy.auth_query.lookup(cluster, db, client.user)
        if client.phase is C.AUTH:
            self._exchange(secret)

    def _looked_up(self, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        if isinstance(exc, PgError):
            self.client.fatal(exc)
        elif exc is not None:
            log.error("[c%d] auth_query failed: %r", self.client.id, exc)
            self.client.fatal(PgError(INTERNAL_ERROR, "internal error during login", fatal=True))

    def _exchange(self, password: str | None) -> None:
        """Start the authentication exchange against the user's stored secret."""
        client = self.client
        proxy = client.proxy
        try:
            secret = proxy.credentials.scram_secret(self.cluster_id, client.user, password)
            self.exchange = ClientExchange(
                proxy.config.proxy.auth_type, client.user, password, secret, self.channel_binding
            )
        except ValueError:  # an unusable stored secret (from auth_query): as no secret at all
            secret = proxy.credentials.scram_secret(self.cluster_id, client.user, None)
            self.exchange = ClientExchange(
                proxy.config.proxy.auth_type, client.user, None, secret, self.channel_binding
            )
        try:
            reply, done = self.exchange.start()
        except AuthFailed:
            self._failed()
            return
        if reply:
            client.transport.write(reply)
        if done:
            self._authenticated()

    def _auth_message(self, kind: int, body: bytes) -> None:
        assert self.exchange is not None
        try:
            reply, done = self.exchange.message(kind, body)
        except AuthFailed:
            self._failed()
            return
        if reply:
            self.client.transport.write(reply)
        if done:
            keys = self.exchange.keys
            proxy, user = self.client.proxy, self.client.user
            # Keys for pass-through logins to PostgreSQL as this user: a pool that failed to
            # log in without them may try again at once.
            if keys is not None and proxy.keys.put(self.cluster_id, user, keys):
                proxy.registry.credentials_changed(self.cluster_id, user)
            self._authenticated()

    def _failed(self) -> None:
        """A wrong password or an unknown user (the same answer, 28P01): counted by the login
        throttle, which may delay the answer."""
        client = self.client
        err = PgError(
            INVALID_PASSWORD, f'password authentication failed for user "{client.user}"',
            fatal=True,
        )  # fmt: skip
        delay = client.proxy.throttle.failed(client.address, client.user, time.monotonic())
        if delay <= 0:
            raise err
        self.failing = True
        asyncio.get_running_loop().call_later(delay, client.fatal, err)

    def _authenticated(self) -> None:
        """The client joins its pool, and is greeted at once unless the pool still has to
        learn its server's parameters (then a task waits for them)."""
        client = self.client
        proxy = client.proxy
        proxy.throttle.succeeded(client.address, client.user)
        client.move(C.LOGIN)
        if (
            client.pool is None
            and proxy.console is not None
            and client.database in (proxy.console.databases)
        ):
            self._console_login()
            return
        try:
            pool = self._join()
        except PgError as exc:
            self._ended(exc)
            return
        if pool.welcome is not None:
            proxy.login_done(client)
            self.greet(pool)
            return
        task = proxy.spawn(self._greet_later(pool))

        def finished(t: asyncio.Task[None]) -> None:
            self._ended(None if t.cancelled() else t.exception())

        task.add_done_callback(finished)

    def _join(self) -> Pool:
        client = self.client
        pool = client.proxy.registry.get_pool(client.database, client.user)
        if pool is None:
            raise PgError(
                INVALID_CATALOG_NAME, f'database "{client.database}" does not exist', fatal=True
            )
        limit = pool.settings.max_client_conn
        if limit and len(pool.clients) >= limit:
            raise PgError(
                TOO_MANY_CONNECTIONS,
                f'no more connections allowed for pool "{pool.name}" (max_client_conn {limit})',
                fatal=True,
            )
        tool = client.params.get("application_name") or client.options.get("application_name", "")
        if pool.mode == "statement" and tool in DUMP_TOOLS:
            # Each of their statements could run on another server, outside their snapshot.
            raise PgError(
                FEATURE_NOT_SUPPORTED,
                f'{tool} cannot run through pool "{pool.name}" in statement mode: use a pool in '
                "session or transaction mode",
                fatal=True,
            )
        client.join(pool)
        return pool

    async def _greet_later(self, pool: Pool) -> None:
        await pool.wait_welcome()
        if self.client.phase is not C.CLOSED:
            self.greet(pool)

    def _ended(self, exc: BaseException | None) -> None:
        """The end of a login: the deadline stops; an error ends the client."""
        client = self.client
        client.proxy.login_done(client)
        if isinstance(exc, PgError):
            client.fatal(
                PgError(exc.sqlstate, exc.message, fatal=True, detail=exc.detail, hint=exc.hint)
            )
        elif exc is not None:
            log.error("[c%d] login failed: %r", client.id, exc)
            client.fatal(PgError(INTERNAL_ERROR, f"internal error during login: {exc}", fatal=True))

    def _console_login(self) -> None:
        """An authenticated console user: greeted by the console, or refused (42501) when the
        user is in neither admin_users nor stats_users."""
        client = self.client
        proxy = client.proxy
        proxy.login_done(client)
        console = proxy.console
        assert console is not None
        role = console.role(client.user)
        if role is None:
            self._ended(
                PgError(
                    INSUFFICIENT_PRIVILEGE,
                    f'permission denied for database "{client.database}"',
                    detail=f'user "{client.user}" is in neither admin_users nor stats_users',
                    fatal=True,
                )
            )
            return
        client.key = proxy.cancels.new_key(client)
        hello = console.greeting(client.params.get("application_name", ""))
        client.transport.write(hello + m.backend_key_data(*client.key) + m.READY_IDLE)
        rest = self.framer.take_rest() if self.framer is not None else b""
        client.logged_in()
        log.info("[c%d] %s opened the admin console as %s (%s)", client.id, client.peer,
                 client.user, role)  # fmt: skip
        console.attach(client, role)  # from now on the console reads this connection
        if rest:
            console.feed(client, rest)

    # ---- the greeting ---------------------------------------------------------------------------

    def greet(self, pool: Pool) -> None:
        """AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery: the client is in."""
        client = self.client
        proxy = client.proxy
        # Clients of a pool mostly log in with the same parameters: build each greeting once.
        key = (tuple(client.params.items()), proxy.tracked)
        greeting = pool.greetings.get(key)
        if greeting is None:
            greeting = self._greeting(pool)
            if len(pool.greetings) >= MAX_GREETINGS:
                pool.greetings.clear()
            pool.greetings[key] = greeting
        hello, params = greeting
        client.params = dict(params)
        client.key = proxy.cancels.new_key(client)
        client.transport.write(hello + m.backend_key_data(*client.key) + m.READY_IDLE)
        rest = self.framer.take_rest() if self.framer is not None else b""
        client.logged_in()
        log.debug("[c%d] %s logged in as %s to pool %s", client.id, client.peer, client.user,
                  pool.name)  # fmt: skip
        if rest:
            client.data_received(rest)

    def _greeting(self, pool: Pool) -> tuple[bytes, dict[str, str]]:
        """AuthenticationOk and the ParameterStatus set for this client's startup parameters
        over the pool's server parameters, and the tracked parameters it starts with."""
        client = self.client
        assert pool.welcome is not None
        welcome = dict(pool.welcome)
        welcome.update(client.params)
        if "client_encoding" in client.params:
            welcome["client_encoding"] = _encoding_name(client.params["client_encoding"])
        tracked = client.proxy.tracked
        params = {k: v for k, v in welcome.items() if k in tracked}
        names = pool.welcome_names
        out = [m.AUTH_OK_MSG]
        out.extend(m.parameter_status(names.get(k, k), v) for k, v in welcome.items())
        return b"".join(out), params


def _console_password(proxy: ProxyState, user: str) -> str | None:
    """A console user's password: the first cluster's entry for that user name."""
    for cluster in proxy.registry.clusters():
        known = cluster.user(user)
        if known is not None:
            return known.password
    return None


def _encoding_name(value: str) -> str:
    return "UTF8" if P.canonical("client_encoding", value) == "utf8" else value
