"""Session handles: the typed phase helpers, and ``Session``/``AsyncSession``.

A session handle is usable as it is returned by ``client.session(...)`` and is
its own context manager, as files and sockets are: leaving a ``with`` block
ends it ``failure`` on an exception and ``success`` otherwise; without
``with``, call ``end()``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from traced.format import layout, vocab


class _Client(Protocol):
    """What a blocking session handle needs of its client."""

    def emit(self, session_id: str, phase: str, payload: dict[str, Any], *, ack: bool = ...,
             ts: float | None = ...) -> int | None: ...

    def end(self, session_id: str, outcome: str = ..., summary: str | None = ...) -> dict[str, Any]: ...


class _AsyncClient(Protocol):
    """What an async session handle needs of its client."""

    def emit(self, session_id: str, phase: str, payload: dict[str, Any], *, ack: bool = ...,
             ts: float | None = ...) -> Awaitable[int | None]: ...

    def end(self, session_id: str, outcome: str = ..., summary: str | None = ...) -> Awaitable[dict[str, Any]]: ...

R = TypeVar("R")


class PhaseHelpers(Generic[R]):
    """Typed helpers for the known phases, over ``event`` (sync or async)."""

    def event(self, phase: str, payload: dict[str, Any] | None = None, *, ack: bool = True,
              ts: float | None = None) -> R:
        """Append any event."""
        raise NotImplementedError

    def tool_call(self, tool: str, args: Any = None, *, call_id: str | None = None,
                  kind: str | None = None, server: str | None = None, ack: bool = True,
                  **extra: Any) -> R:
        """``tool_call {tool, args, call_id?, kind?: tool|skill|mcp|hook, server?}``."""
        return self.event(vocab.TOOL_CALL, _fields(
            tool=tool, args=args if args is not None else {}, call_id=call_id, kind=kind,
            server=server, **extra), ack=ack)

    def tool_result(self, tool: str, ok: bool = True, *, duration_ms: float | None = None,
                    result_summary: str | None = None, error: str | None = None,
                    call_id: str | None = None, ack: bool = True, **extra: Any) -> R:
        """``tool_result {tool, ok, duration_ms?, result_summary?, error?, call_id?}``."""
        return self.event(vocab.TOOL_RESULT, _fields(
            tool=tool, ok=ok, duration_ms=duration_ms, result_summary=result_summary,
            error=error, call_id=call_id, **extra), ack=ack)

    def llm_call(self, model: str, *, input_tokens: int = 0, output_tokens: int = 0,
                 cache_read_tokens: int | None = None, cache_write_tokens: int | None = None,
                 provider: str | None = None, cost_usd: float | None = None,
                 latency_ms: float | None = None, finish_reason: str | None = None,
                 ack: bool = True, **extra: Any) -> R:
        """``llm_call {provider?, model, usage, cost_usd?, latency_ms?, finish_reason?}``."""
        usage = _fields(input_tokens=input_tokens, output_tokens=output_tokens,
                        cache_read_tokens=cache_read_tokens, cache_write_tokens=cache_write_tokens)
        return self.event(vocab.LLM_CALL, _fields(
            provider=provider, model=model, usage=usage, cost_usd=cost_usd,
            latency_ms=latency_ms, finish_reason=finish_reason, **extra), ack=ack)

    def note(self, message: str, *, ack: bool = True, **extra: Any) -> R:
        """``note {message}``."""
        return self.event(vocab.NOTE, _fields(message=message, **extra), ack=ack)

    def decision(self, decision: str, *, ack: bool = True, **extra: Any) -> R:
        """``decision {decision, …}``."""
        return self.event(vocab.DECISION, _fields(decision=decision, **extra), ack=ack)

    def verify(self, check: str, ok: bool, output: str | None = None, *, ack: bool = True) -> R:
        """``verify {check, ok, output?}``."""
        return self.event(vocab.VERIFY, _fields(check=check, ok=ok, output=output), ack=ack)

    def artifact(self, path: str, kind: str | None = None, size_bytes: int | None = None, *,
                 copy: bool = False, ack: bool = True) -> R:
        """``artifact {path, kind?, size_bytes?}``; ``copy=True`` has the daemon copy the file
        into ``<session>/artifacts/`` (the record then has ``stored``, ``sha256``, ``size_bytes``)."""
        if copy:
            path = os.path.abspath(path)
        return self.event(vocab.ARTIFACT, _fields(path=path, kind=kind, size_bytes=size_bytes,
                                              attach=True if copy else None), ack=ack)

    def hook(self, event: str, name: str | None = None, ok: bool | None = None,
             duration_ms: float | None = None, *, ack: bool = True, **extra: Any) -> R:
        """``hook {event, name?, ok?, duration_ms?}``."""
        return self.event(vocab.HOOK, _fields(event=event, name=name, ok=ok,
                                          duration_ms=duration_ms, **extra), ack=ack)

    def user_prompt(self, prompt: str | None = None, prompt_id: str | None = None, *,
                    ack: bool = True) -> R:
        """``user_prompt {prompt_id?, prompt?}``: starts a new turn."""
        return self.event(vocab.USER_PROMPT, _fields(prompt=prompt, prompt_id=prompt_id), ack=ack)


def _fields(**fields: Any) -> dict[str, Any]:
    """A payload from keyword fields, without the None ones."""
    return {k: v for k, v in fields.items() if v is not None}


class _Handle:
    """What both handles share: the session's id, directory and trace path."""

    def __init__(self, session_id: str, dir: str) -> None:
        self.session_id = session_id
        self.dir = dir
        self.ended = False
        self.meta: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        """The session id (``session_id``, as the format and the wire call it)."""
        return self.session_id

    @property
    def trace_path(self) -> str:
        """The session's trace.jsonl ('' when the directory is not known, e.g. after ``attach``)."""
        return os.path.join(self.dir, layout.TRACE) if self.dir else ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.session_id}{' ended' if self.ended else ''}>"


def failure_summary(exc: BaseException) -> str:
    """The ``end`` summary of a session left by an exception (at most 500 characters)."""
    return f"{type(exc).__name__}: {exc}"[:500]


class Session(_Handle, PhaseHelpers["int | None"]):
    """One session seen from a blocking client: every helper returns the step."""

    def __init__(self, client: _Client, session_id: str, dir: str) -> None:
        super().__init__(session_id, dir)
        self.client = client

    def event(self, phase: str, payload: dict[str, Any] | None = None, *, ack: bool = True,
              ts: float | None = None) -> int | None:
        """Append any event; the step, or None with ``ack=False`` (or while spooling)."""
        return self.client.emit(self.session_id, phase, payload or {}, ack=ack, ts=ts)

    def end(self, outcome: str = "success", summary: str | None = None) -> dict[str, Any]:
        """End the session; returns its final meta.json contents ({} while spooling)."""
        self.meta = self.client.end(self.session_id, outcome, summary)
        self.ended = True
        return self.meta

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.ended:
            return
        if exc is None:
            self.end(vocab.SUCCESS)
            return
        from traced.errors import DaemonUnavailable, RequestError

        try:
            self.end(vocab.FAILURE, summary=failure_summary(exc))
        except (RequestError, DaemonUnavailable):
            pass


class AsyncSession(_Handle, PhaseHelpers[Any]):
    """One session seen from an async client: every helper is awaited for the step."""

    def __init__(self, client: _AsyncClient, session_id: str, dir: str) -> None:
        super().__init__(session_id, dir)
        self.client = client

    def event(self, phase: str, payload: dict[str, Any] | None = None, *, ack: bool = True,
              ts: float | None = None) -> Any:
        """Append any event: ``await s.event(...)`` gives the step (None with ack=False)."""
        return self.client.emit(self.session_id, phase, payload or {}, ack=ack, ts=ts)

    async def end(self, outcome: str = "success", summary: str | None = None) -> dict[str, Any]:
        """End the session; returns its final meta."""
        self.meta = await self.client.end(self.session_id, outcome, summary)
        self.ended = True
        return self.meta

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.ended:
            return
        if exc is None:
            await self.end(vocab.SUCCESS)
            return
        import anyio

        from traced.errors import DaemonUnavailable, RequestError

        with anyio.CancelScope(shield=True):
            try:
                await self.end(vocab.FAILURE, summary=failure_summary(exc))
            except (RequestError, DaemonUnavailable):
                pass
