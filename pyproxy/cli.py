"""Command line: ``pyproxy serve -c FILE``, ``pyproxy check -c FILE``, ``pyproxy scram-secret``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import resource
import signal
import socket
import sys

from pyproxy import __version__
from pyproxy.config import Config, load_config
from pyproxy.errors import ConfigError
from pyproxy.log import setup_logging

log = logging.getLogger("pyproxy.cli")


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _scram_secret(iterations: int) -> int:
    """Print the verifier of the password read from stdin (prompted for on a terminal)."""
    import getpass

    from pyproxy.auth.scram import make_scram_secret

    if iterations < 1:
        print("pyproxy scram-secret: --iterations must be at least 1", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("pyproxy scram-secret: no password on stdin", file=sys.stderr)
        return 2
    print(make_scram_secret(password, iterations=iterations))
    return 0


def _install_uvloop() -> str:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def _serve(path: str, config: Config) -> int:
    from pyproxy.app import App

    app = App(config)
    await app.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_stop(signame: str) -> None:
        if stop.is_set():
            log.warning("second %s: stopping now", signame)
            app.config = app.config  # keep types happy; immediate stop below
            for client in list(app.state.clients):
                client.transport.abort()
        log.info("%s received: shutting down", signame)
        stop.set()

    def on_reload() -> None:
        try:
            new = load_config(path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration:\n%s", exc)
            return
        except Exception as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return
        app.reload(new)

    app.on_shutdown = stop.set  # SHUTDOWN from the admin console
    loop.add_signal_handler(signal.SIGTERM, on_stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, on_stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    admin = f", admin API on {config.admin.listen_host}:{app.admin_port}" if app.admin else ""
    print(f"pyproxy listening on {config.proxy.listen_host}:{app.client_port}{admin}", flush=True)
    await stop.wait()
    await app.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyproxy", description="PostgreSQL connection pooler")
    parser.add_argument("--version", action="version", version=f"pyproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the pooler")
    serve.add_argument("-c", "--config", required=True, help="TOML config file")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    check = sub.add_parser("check", help="validate a config file and exit")
    check.add_argument("-c", "--config", required=True, help="TOML config file")
    demo = sub.add_parser("demo", help="run pyproxy in front of a throwaway local PostgreSQL")
    demo.add_argument("--clients", type=int, default=200, help="clients in the burst")
    demo.add_argument("--queries", type=int, default=10, help="queries per client")
    demo.add_argument("--pool-size", type=int, default=5)
    demo.add_argument("--no-serve", action="store_true", help="exit after the burst")
    secret = sub.add_parser(
        "scram-secret",
        help="read a password from stdin, print its SCRAM-SHA-256 verifier for the config",
    )
    secret.add_argument("--iterations", type=int, default=4096, help="PBKDF2 iterations")
    args = parser.parse_args(argv)

    if args.command == "scram-secret":
        return _scram_secret(args.iterations)

    if args.command == "demo":
        from pyproxy.demo import run_demo

        setup_logging("warning")
        _raise_fd_limit()
        _install_uvloop()
        try:
            return asyncio.run(
                run_demo(args.clients, args.queries, args.pool_size, serve=not args.no_serve)
            )
        except KeyboardInterrupt:
            return 0
        except RuntimeError as exc:
            print(f"pyproxy demo: {exc}", file=sys.stderr)
            return 1

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"pyproxy: invalid configuration {args.config}:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        pools = sum(len(c.pools) for c in config.clusters)
        print(f"{args.config}: OK ({len(config.clusters)} clusters, {pools} pools)")
        return 0
    setup_logging(args.log_level, config.proxy.log_format)
    _raise_fd_limit()
    loop_name = _install_uvloop()
    log.info("pyproxy %s starting (%s event loop)", __version__, loop_name)
    if config.proxy.workers > 1 and not hasattr(socket, "SO_REUSEPORT"):
        log.warning("this platform has no SO_REUSEPORT: running one worker, not %d",
                    config.proxy.workers)  # fmt: skip
    elif config.proxy.workers > 1:
        from pyproxy.workers.supervisor import serve as serve_workers

        try:
            return asyncio.run(serve_workers(args.config, config, args.log_level))
        except OSError as exc:
            log.error("cannot start: %s", exc)
            return 1
        except Exception as exc:
            return _start_failed(exc)
    try:
        return asyncio.run(_serve(args.config, config))
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    except Exception as exc:
        return _start_failed(exc)


def _start_failed(exc: Exception) -> int:
    """Exit code 2 for an admin API that cannot start with this configuration."""
    from pyproxy.admin.server import AdminConfigError
    from pyproxy.admin.store import StateStoreError

    if isinstance(exc, (AdminConfigError, StateStoreError)):
        log.error("cannot start: %s", exc)
        return 2
    raise exc
