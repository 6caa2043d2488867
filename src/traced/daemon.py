"""``traced serve``: the task group, signals, sd_notify, graceful drain.

Start-up order: take the socket (activated fd 3, or bind after checking no
daemon already listens), recover sessions a previous daemon left open, then
accept and send READY=1. SIGTERM/SIGINT stop accepting, let in-flight
requests finish, fsync what is dirty and leave open sessions open so the next
daemon re-adopts them. SIGHUP reloads what can change without a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import signal
import socket
import time
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import SocketListener

from traced import __version__, logs, paths
from traced import config as config_mod
from traced.bus import Bus
from traced.config import Config
from traced.ingest import SpoolIngest
from traced.redact import Redactor, secret_env_values
from traced.registry import Registry
from traced.sdnotify import Notifier, listen_fds
from traced.server import Server
from traced.watchers import WATCH_TIMEOUT_MS, Watchers

log = structlog.get_logger("traced.daemon")

STATUS_EVERY = float(os.environ.get("TRACED_STATUS_EVERY") or 5.0)


class AlreadyRunning(RuntimeError):
    """Another daemon already answers on the socket."""


def _socket_alive(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _lock(path: Path) -> int:
    """Hold an exclusive flock beside the socket: one daemon per socket, no races."""
    paths.ensure_private_dir(path.parent)
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(f"another daemon holds {path}.lock") from None
    return fd


async def _bind(path: Path) -> SocketListener:
    """Bind the socket (0600 in a 0700 dir), replacing a stale one."""
    if path.exists() or path.is_symlink():
        if _socket_alive(path):
            raise AlreadyRunning(f"a daemon already listens on {path}")
        path.unlink()
    return await anyio.create_unix_listener(path, mode=0o600)


def _fd_budget(cfg: Config) -> None:
    """Raise the soft RLIMIT_NOFILE toward the hard one so that the fd cache, every
    connection and some slack fit; shrink the fd cache when they cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = cfg.fd_cache + cfg.max_connections + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < want:
        cfg.fd_cache = max(64, soft - cfg.max_connections - 256)
        log.warning("fd_cache_clamped", fd_cache=cfg.fd_cache, nofile=soft)


def _redactor(cfg: Config) -> Redactor:
    return Redactor(secret_env_values(os.environ), enabled=cfg.redaction)


async def serve(cfg: Config, config_file: str | None = None) -> None:
    """Run the daemon until SIGTERM/SIGINT."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # RLIMIT_FSIZE must give EFBIG, not kill us
    notifier = Notifier.from_env()
    _fd_budget(cfg)
    registry = Registry(cfg)
    registry.load_roots()
    bus = Bus()
    registry.on_write.append(lambda _live, records: bus.publish(records))
    server = Server(cfg, registry, _redactor(cfg), bus)
    forwarders = _forwarders(cfg, registry)
    activated = listen_fds()
    for extra in activated[1:]:
        extra.close()
    how = "activated" if activated else "bound"
    path = cfg.socket_path()
    lock_fd = -1 if activated else _lock(path)
    if not activated and _socket_alive(path):
        raise AlreadyRunning(f"a daemon already listens on {path}")
    listener: SocketListener | None = None
    bound: Path | None = None
    sock_name = str(path)
    if activated:
        listener = await SocketListener.from_socket(activated[0])
        sock_name = _sockname(listener)
    ingest = SpoolIngest(server, paths.spool_dir())
    server.on_hello = ingest.ingest_client
    server.status_extra = lambda: {"socket": sock_name, "socket_source": how,
                                   "config_file": config_file, **ingest.backlog()}
    if forwarders is not None:
        base_extra, fws = server.status_extra, forwarders
        server.status_extra = lambda: {**base_extra(), "forwarders": fws.status()}
    log.info("starting", version=__version__, socket=sock_name, socket_source=how,
             root=str(registry.root), fsync=cfg.fsync)
    try:
        async with anyio.create_task_group() as tg:
            if forwarders is not None:
                tg.start_soon(forwarders.run)
            watchers = Watchers(registry, server.end_session, tg, quiet=ingest.lock)
            adopted, finalized = await watchers.recover()
            if adopted or finalized:
                log.info("recovered", readopted=adopted, finalized=finalized)
            paths.ensure_private_dir(ingest.dir)
            await ingest.ingest_all()
            stop_watching = anyio.Event()  # watchfiles' thread ends promptly on it
            tg.start_soon(ingest.watch, stop_watching)
            tg.start_soon(watchers.watch_other_writers, stop_watching)
            tg.start_soon(_watch_config, server, notifier, config_file, stop_watching)
            if listener is None:  # bound only now: a client never meets a half-recovered daemon
                listener = await _bind(path)
                bound = path
            accept_scope = anyio.CancelScope()
            tg.start_soon(_accept, listener, server, accept_scope)
            tg.start_soon(watchers.idle_sweeper)
            if cfg.fsync == "batch":
                tg.start_soon(_batch_fsync, registry, cfg)
            tg.start_soon(_heartbeat, notifier, server)
            notifier.ready(_status_line(server))
            log.info("ready", pid=os.getpid())
            await _signals(server, notifier, config_file)
            notifier.stopping()
            log.info("stopping", open_sessions=len(registry.sessions))
            accept_scope.cancel()
            stop_watching.set()
            with contextlib.suppress(OSError):
                await listener.aclose()
            tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            await registry.sync_dirty()
    finally:
        registry.shutdown()
        if bound is not None:
            with contextlib.suppress(OSError):
                bound.unlink()
        if lock_fd >= 0:
            os.close(lock_fd)
        log.info("stopped")


def _forwarders(cfg: Config, registry: Registry) -> Any:
    """``--forward``: a Forwarders fed by the registry's write/close hooks (None when not configured)."""
    if not cfg.forward:
        return None
    from traced.forward import Forwarders
    from traced.forward.urls import ForwardURLError

    try:
        fw = Forwarders(cfg.forward, paths.state_dir(), lambda: registry.roots, headers=cfg.forward_headers)
    except ForwardURLError as e:
        raise config_mod.ConfigError(str(e)) from e
    registry.on_write.append(lambda live, _recs: fw.notify(
        live.state.dir, live.state.skill, live.state.session_id, live.state.step, False))
    registry.on_close.append(lambda live: fw.notify(
        live.state.dir, live.state.skill, live.state.session_id, live.state.step, True))
    return fw


def _sockname(listener: SocketListener) -> str:
    from anyio.abc import SocketAttribute

    name: Any = listener.extra(SocketAttribute.local_address, "")
    return name.decode() if isinstance(name, bytes) else str(name)


async def _accept(listener: SocketListener, server: Server, scope: anyio.CancelScope) -> None:
    with scope:
        async with anyio.create_task_group() as conns:
            while True:
                try:
                    stream = await listener.accept()
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return
                except OSError as e:  # EMFILE and friends: back off, keep serving
                    log.error("accept_failed", error=str(e))
                    await anyio.sleep(0.1)
                    continue
                conns.start_soon(server.handle, stream)


async def _batch_fsync(registry: Registry, cfg: Config) -> None:
    while True:
        await anyio.sleep(cfg.fsync_interval)
        await registry.sync_dirty()


def _status_line(server: Server) -> str:
    reg = server.registry
    return (f"{len(reg.sessions)} sessions open, {server.connections} connections, "
            f"{reg.stats.rate(10):.0f} events/s")


async def _heartbeat(notifier: Notifier, server: Server) -> None:
    """STATUS= every few seconds and WATCHDOG=1 at half the watchdog interval.

    It runs on the same event loop as every write, so a wedged writer stops
    the pings and systemd restarts us.
    """
    interval = notifier.watchdog_interval()
    every = min(interval, STATUS_EVERY) if interval else STATUS_EVERY
    last_status = 0.0
    while True:
        if interval:
            notifier.watchdog()
        now = time.monotonic()
        if now - last_status >= STATUS_EVERY:
            notifier.status(_status_line(server))
            last_status = now
        await anyio.sleep(every)


async def _signals(server: Server, notifier: Notifier, config_file: str | None) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum != signal.SIGHUP:
                log.info("signal", signal=signal.Signals(signum).name)
                return
            notifier.reloading()
            try:
                _reload(server, config_file)
            finally:
                notifier.ready(_status_line(server))


async def _watch_config(server: Server, notifier: Notifier, config_file: str | None, stop: anyio.Event) -> None:
    """Reload when the config file changes (SIGHUP does the same)."""
    import watchfiles

    path = Path(config_file) if config_file else paths.config_path()
    if not path.parent.is_dir():
        return
    async for _changes in watchfiles.awatch(path.parent, stop_event=stop, debounce=200, rust_timeout=WATCH_TIMEOUT_MS,
                                             watch_filter=lambda _c, p: Path(p).name == path.name):
        notifier.reloading()
        try:
            _reload(server, config_file)
        finally:
            notifier.ready(_status_line(server))


def _reload(server: Server, config_file: str | None) -> None:
    """Apply what can change without a restart: limits, timeouts, fsync policy, redaction."""
    try:
        new = config_mod.load(config_file)
    except config_mod.ConfigError as e:
        log.error("reload_failed", error=str(e))
        return
    old = server.config
    keep = {"socket": old.socket, "root": old.root}
    for field in new.__struct_fields__:
        if field not in keep:
            setattr(old, field, getattr(new, field))
    server.redactor = _redactor(old)
    log.info("reloaded", fsync=old.fsync, redaction=old.redaction)


def run(cfg: Config, config_file: str | None = None) -> int:
    """Configure logging and run ``serve`` on the best event loop available."""
    logs.configure(cfg.log_level, cfg.log_format)
    backend_options: dict[str, Any] = {}
    if os.environ.get("TRACED_EVENT_LOOP", "uvloop") == "uvloop":
        try:
            import uvloop  # noqa: F401

            backend_options["use_uvloop"] = True
        except ImportError:
            pass
    try:
        anyio.run(serve, cfg, config_file, backend_options=backend_options)
    except AlreadyRunning as e:
        log.error("already_running", error=str(e))
        return 1
    except config_mod.ConfigError as e:  # e.g. a bad --forward URL or a missing extra
        log.error("bad_configuration", error=str(e))
        return 2
    return 0
