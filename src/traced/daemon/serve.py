"""``traced serve``: start-up order, the task group, signals, sd_notify, graceful drain.

Start-up order: take the state directory's lock (one daemon per state dir)
and the socket (activated fd 3, or bind after checking no daemon already
listens), recover sessions a previous daemon left open, replay the spool,
arm every background service (each reports itself ready through
``task_group.start``), then bind, accept and send READY=1. SIGTERM/SIGINT
stop accepting, let in-flight requests finish, fsync what is dirty and leave
open sessions open so the next daemon re-adopts them. SIGHUP (or a change of
the config file) reloads what can change without a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import signal
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import SocketAttribute, SocketListener, TaskStatus

from traced import __version__, locations
from traced.daemon import config as config_mod
from traced.daemon import fswatch, logs, recovery, wal
from traced.daemon.bus import Bus
from traced.daemon.config import Config
from traced.daemon.handler import Handler
from traced.daemon.ingest import SpoolIngest
from traced.daemon.registry import Registry
from traced.daemon.retention import Retention
from traced.daemon.sdnotify import Notifier, listen_fds
from traced.daemon.transport import Transport
from traced.daemon.watchers import Watchers
from traced.errors import AlreadyRunning, ConfigError, ForwardURLError
from traced.format import layout
from traced.redaction.redactor import Redactor, secret_env_values

log = structlog.get_logger("traced.daemon.serve")

STATUS_EVERY = float(os.environ.get("TRACED_STATUS_EVERY") or 5.0)


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


def _own_dir(directory: Path, what: str) -> None:
    """Make ``directory`` this user's private dir (0700); ConfigError when another uid owns it or it is a
    symlink: on a shared /tmp, another user who created it first would receive every client's events."""
    try:
        st = os.lstat(directory)
    except FileNotFoundError:
        layout.ensure_private_dir(directory)
        return
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"the {what} {directory} is not a directory (a symlink?): refusing to use it")
    if st.st_uid != os.getuid():
        raise ConfigError(f"the {what} {directory} is owned by uid {st.st_uid}, not by you (uid {os.getuid()}): "
                          "refusing to listen there; set XDG_RUNTIME_DIR, or --socket to a path in a directory "
                          "of your own")
    os.chmod(directory, layout.DIR_MODE)


def _lock(path: Path, what: str, own_dir: bool = True) -> int:
    """Hold an exclusive flock on ``path``; AlreadyRunning names the holder's pid when another has it.

    ``own_dir``: make the directory this user's private one first (the state and runtime
    dirs); a sessions root keeps the modes its user gave it.
    """
    if own_dir:
        _own_dir(path.parent, f"directory of {what}")
    else:
        path.parent.mkdir(parents=True, exist_ok=True, mode=layout.DIR_MODE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise AlreadyRunning(f"another daemon (pid {holder}) holds {what} ({path})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
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


async def serve(cfg: Config, config_file: str | None = None, overrides: dict[str, Any] | None = None) -> None:
    """Run the daemon until SIGTERM/SIGINT. Raises AlreadyRunning, ConfigError. ``overrides``: the
    command line's settings, kept over the config file's on every reload."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # RLIMIT_FSIZE must give EFBIG, not kill us
    notifier = Notifier.from_env()
    _fd_budget(cfg)
    state_lock = _lock(locations.state_dir() / "daemon.lock", "the state directory")
    try:  # and one daemon per sessions root: two would both number the same sessions' steps
        root_lock = _lock(cfg.root_path() / ".traced-daemon.lock", "the sessions root", own_dir=False)
    except BaseException:
        os.close(state_lock)
        raise
    registry = Registry(cfg)
    registry.roots.load()
    # the log's acked lines that a power cut took from their traces go back before anything else
    replayed = await anyio.to_thread.run_sync(wal.replay, registry.commit_log_dir)
    if replayed.lines or replayed.gone or replayed.torn_bytes or replayed.failed or replayed.stale:
        log.info("wal_recovered", sessions=len(replayed.lines), lines=sum(replayed.lines.values()),
                 gone=len(replayed.gone), torn_bytes=replayed.torn_bytes, gaps=replayed.gaps,
                 stale=replayed.stale, failed=len(replayed.failed))
    registry.stats.torn_tails_moved += replayed.torn_moved
    registry.stats.wal_replayed_lines = sum(replayed.lines.values())
    registry.stats.wal_stale_lines = replayed.stale
    if registry.commit.wal is not None:
        registry.commit.wal.held = replayed.held
    bus = Bus()
    registry.on_durable.append(lambda _live, records: bus.publish(records))
    registry.listening.append(lambda: bool(bus.subscribers))
    handler = Handler(cfg, registry, _redactor(cfg), bus)
    transport = Transport(cfg, handler)
    forwarders = _forwarders(cfg, registry, handler)
    receiver = _receiver(cfg, handler)
    mirror = _mirror(cfg, registry)
    activated = listen_fds()
    for extra in activated[1:]:
        extra.close()
    how = "activated" if activated else "bound"
    path = cfg.socket_path()
    lock_fd = -1
    listener: SocketListener | None = None
    bound: Path | None = None
    sock_name = str(path)
    try:
        if activated:
            listener = await SocketListener.from_socket(activated[0])
            sock_name = _sockname(listener)
        else:
            lock_fd = _lock(Path(f"{path}.lock"), "the socket")
            if _socket_alive(path):
                raise AlreadyRunning(f"a daemon already listens on {path}")
        ingest = SpoolIngest(handler, locations.spool_dir())
        handler.on_hello = ingest.ingest_client

        running: dict[str, Watchers] = {}
        retention = Retention(cfg, registry, lambda: running["watchers"].foreign if "watchers" in running else ())

        def status() -> dict[str, Any]:
            info = status_info(registry, transport.connections, bus, cfg.fsync, transport.reaped)
            info.update({"socket": sock_name, "socket_source": how, "config_file": config_file, **ingest.backlog()})
            if "watchers" in running:
                info["foreign_sessions"] = len(running["watchers"].foreign)
                info["idle_sweeps"] = running["watchers"].sweeps
            if forwarders is not None:
                info["forwarders"] = forwarders.status()
            if receiver is not None:
                info["otlp"] = receiver.status()
            info.update(retention.status())
            if mirror is not None:
                info["mirror"] = mirror.status()
            return info

        handler.status = status
        handler.held = retention.held_now
        handler.on_reload.append(retention.poke)
        if (log_ := registry.commit.wal) is not None:  # a reload applies the log's size from the next round
            handler.on_reload.append(lambda: setattr(log_, "checkpoint_bytes", cfg.wal_checkpoint_bytes))
        # Signals are taken from "starting" on: a SIGTERM while recovering, or right after the
        # bind, stops the daemon gracefully once it is up (it used to kill it outright).
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            log.info("starting", version=__version__, socket=sock_name, socket_source=how,
                     root=str(registry.root), fsync=cfg.fsync)
            async with anyio.create_task_group() as tg:
                if forwarders is not None:
                    tg.start_soon(forwarders.run)
                if mirror is not None:
                    tg.start_soon(mirror.run)
                watchers = running["watchers"] = Watchers(registry, handler.end_session, tg, quiet=ingest.lock)
                adopted, finalized = await recovery.recover(registry, watchers)
                if adopted or finalized:
                    log.info("recovered", readopted=adopted, finalized=finalized)
                stop_watching = anyio.Event()  # the watch threads end promptly on it
                await tg.start(ingest.watch, stop_watching)  # replays the spool once armed
                await tg.start(watchers.watch_other_writers, stop_watching)
                reload = partial(_reload, handler, config_file, overrides)
                await tg.start(partial(_watch_config, reload, notifier, config_file, stop_watching))
                if receiver is not None:
                    await tg.start(receiver.run)
                if listener is None:  # bound only now: a client never meets a half-recovered daemon
                    listener = await _bind(path)
                    bound = path
                accept_scope = anyio.CancelScope()
                tg.start_soon(transport.accept, listener, accept_scope)
                tg.start_soon(watchers.idle_sweeper)
                tg.start_soon(_batch_fsync, registry, cfg)  # always: a reload may turn the policy to batch
                tg.start_soon(_heartbeat, notifier, registry, transport)
                tg.start_soon(retention.run)  # its first pass right away, in a worker thread
                notifier.ready(_status_line(registry, transport))
                log.info("ready", pid=os.getpid())
                await _signals(signals, reload, notifier, registry=registry, transport=transport)
                notifier.stopping()
                log.info("stopping", open_sessions=len(registry.sessions))
                accept_scope.cancel()
                if receiver is not None:
                    await receiver.stop()
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
        for fd in (lock_fd, state_lock, root_lock):
            if fd >= 0:
                os.close(fd)
        log.info("stopped")


def status_info(registry: Registry, connections: int, bus: Bus, fsync: str, reaped: int = 0) -> dict[str, Any]:
    """The daemon's status for ``traced status`` (the ``status`` reply's ``info``).

    Times in seconds, sizes in bytes; the 10 most recently active open sessions.
    """
    st = registry.stats
    now = time.monotonic()
    open_sessions = sorted(registry.sessions.values(), key=lambda lv: lv.state.last_activity, reverse=True)
    return {
        "pid": os.getpid(),
        "version": __version__,
        "uptime_s": round(time.time() - st.started, 3),
        "root": str(registry.root),
        "roots": sorted(registry.roots),
        "connections": connections,
        "connections_reaped": reaped,
        "open_sessions": len(registry.sessions),
        "sessions": [
            {
                "skill": lv.state.skill,
                "session_id": lv.state.session_id,
                "steps": lv.state.step,
                "idle_s": round(now - lv.state.last_activity, 3),
                "owner_pid": lv.state.owner_pid,
            }
            for lv in open_sessions[:10]
        ],
        "events_written": st.events_written,
        "events_per_s_1m": round(st.rate(), 3),
        "bytes_written": st.bytes_written,
        "redactions": st.redactions,
        "write_errors": st.write_errors,
        "sessions_opened": st.sessions_opened,
        "sessions_closed": st.sessions_closed,
        "finalized": dict(st.finalized),
        "torn_tails_moved": st.torn_tails_moved,
        "client_events_lost": st.client_events_lost,
        "fsync": fsync,
        "fsyncs": registry.fsyncs,
        "sync_rounds": registry.commit.rounds,
        "wal_syncs": registry.commit.log_syncs,
        "wal_checkpoints": registry.commit.wal.checkpoints if registry.commit.wal is not None else 0,
        "wal_resets": registry.commit.wal.resets if registry.commit.wal is not None else 0,
        "wal_replayed_lines": st.wal_replayed_lines,
        "wal_stale_lines": st.wal_stale_lines,
        "open_fds": len(registry.fds),
        **bus.status(),
    }


def _forwarders(cfg: Config, registry: Registry, handler: Handler) -> Any:
    """``--forward``: a Forwarders told of durable records and finished sessions (None when not configured)."""
    if not cfg.forward:
        return None
    from traced.forward import Forwarders

    try:
        fw = Forwarders(cfg.forward, locations.state_dir(), lambda: registry.roots, headers=cfg.forward_headers,
                        capture_content=cfg.otlp_capture_content)
    except ForwardURLError as e:
        raise ConfigError(str(e)) from e
    registry.on_durable.append(lambda live, _recs: fw.notify(
        live.state.dir, live.state.skill, live.state.session_id, live.state.step, False))
    registry.listening.append(lambda: True)
    handler.on_finished.append(lambda live: fw.notify(
        live.state.dir, live.state.skill, live.state.session_id, live.state.step, True))
    return fw


def _receiver(cfg: Config, handler: Handler) -> Any:
    """``--otlp-listen``: an OtlpReceiver, bound now (None when not configured). ConfigError when the
    address is not loopback without ``otlp_allow_remote``, is taken, or the extra is not installed."""
    if not cfg.otlp_listen:
        return None
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: F401
    except ImportError as e:
        from traced._version import install_hint

        raise ConfigError(f"--otlp-listen needs the otlp-receiver extra ({e}): "
                          f"{install_hint('otlp-receiver', 'starlette uvicorn opentelemetry-proto')}") from e
    from traced.daemon.otlp import OtlpReceiver

    receiver = OtlpReceiver(handler, cfg.otlp_listen, cfg.otlp_allow_remote)
    receiver.bind()
    return receiver


def _mirror(cfg: Config, registry: Registry) -> Any:
    """``--mirror``: a Mirror writing into the global root (None when not configured)."""
    if not cfg.mirror:
        return None
    from traced.forward import mirror_of

    try:
        return mirror_of(cfg.mirror, str(registry.root))
    except ForwardURLError as e:
        raise ConfigError(str(e)) from e


def _sockname(listener: SocketListener) -> str:
    name: Any = listener.extra(SocketAttribute.local_address, "")
    return name.decode() if isinstance(name, bytes) else str(name)


async def _batch_fsync(registry: Registry, cfg: Config) -> None:
    """The ``batch`` policy: fdatasync dirty sessions every ``fsync_interval`` seconds, and at
    once when a listener (a subscriber, a forwarder) waits for written records. Under ``never``
    the same tick only looks for traces deleted under their sessions (``Registry.let_go_gone``)."""
    while True:
        with anyio.move_on_after(cfg.fsync_interval):
            await registry.sync_wanted.wait()
        if cfg.fsync == "batch":  # (the config object is reloaded in place)
            await registry.sync_dirty()
        else:
            registry.sync_wanted = anyio.Event()
            if cfg.fsync == "never":
                registry.let_go_gone()


def _status_line(registry: Registry, transport: Transport) -> str:
    return (f"{len(registry.sessions)} sessions open, {transport.connections} connections, "
            f"{registry.stats.rate(10):.0f} events/s")


async def _heartbeat(notifier: Notifier, registry: Registry, transport: Transport) -> None:
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
            notifier.status(_status_line(registry, transport))
            last_status = now
        await anyio.sleep(every)


async def _signals(signals: AsyncIterator[int], reload: Callable[[], None], notifier: Notifier, *,
                   registry: Registry, transport: Transport) -> None:
    """Until SIGTERM/SIGINT: SIGHUP reloads the config."""
    async for signum in signals:
        if signum != signal.SIGHUP:
            log.info("signal", signal=signal.Signals(signum).name)
            return
        notifier.reloading()
        try:
            reload()
        finally:
            notifier.ready(_status_line(registry, transport))


async def _watch_config(reload: Callable[[], None], notifier: Notifier, config_file: str | None, stop: anyio.Event,
                        *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Reload when the config file changes (SIGHUP does the same); started once armed."""
    path = Path(config_file) if config_file else locations.config_path()
    if not path.parent.is_dir():
        task_status.started()
        return

    async def changed(_changes: fswatch.Changes) -> None:
        notifier.reloading()
        try:
            reload()
        finally:
            notifier.ready("reloaded")

    await fswatch.watch([path.parent], changed, stop=stop, recursive=False,
                        keep=lambda _c, p: Path(p).name == path.name, task_status=task_status)


def _reload(handler: Handler, config_file: str | None, overrides: dict[str, Any] | None) -> None:
    """Apply what can change without a restart: limits, timeouts, fsync policy, redaction. The
    command line's ``overrides`` (``traced serve --fsync never``) still win over the file."""
    try:
        new = config_mod.load(config_file, overrides)
    except ConfigError as e:
        log.error("reload_failed", error=str(e))
        return
    old = handler.config
    keep = {"socket": old.socket, "root": old.root}
    for field in new.__struct_fields__:
        if field not in keep:
            setattr(old, field, getattr(new, field))
    handler.redactor = _redactor(old)
    for hook in handler.on_reload:
        hook()
    log.info("reloaded", fsync=old.fsync, redaction=old.redaction, retention=old.retention or "off")


def run(cfg: Config, config_file: str | None = None, overrides: dict[str, Any] | None = None) -> int:
    """Configure logging and run ``serve`` on the best event loop available.

    Returns the exit code: 0, 1 (another daemon runs), 2 (bad configuration).
    """
    logs.configure(cfg.log_level, cfg.log_format)
    backend_options: dict[str, Any] = {}
    if os.environ.get("TRACED_EVENT_LOOP", "uvloop") == "uvloop":
        try:
            import uvloop  # noqa: F401

            backend_options["use_uvloop"] = True
        except ImportError:
            pass
    try:
        anyio.run(serve, cfg, config_file, overrides, backend_options=backend_options)
    except AlreadyRunning as e:
        log.error("already_running", error=str(e))
        return 1
    except ConfigError as e:  # e.g. a bad --forward URL or a missing extra
        log.error("bad_configuration", error=str(e))
        return 2
    return 0
