"""Claude Code usage and cost: at ``Stop``, ``SubagentStop``, ``PreCompact`` and ``SessionEnd`` the
hook reads the session's transcript from where it last stopped and records one ``llm_call`` per
API response (``transcript.Reader``).

Where it stopped is kept per session in ``<state>/transcripts/<session_id>.json`` (0600; the
hook's own small state, never session files): for each file read, ``[offset, inode, crc32 of the
64 bytes before offset]``. A file that was replaced (another inode), truncated (shorter than the
offset) or rewritten (those bytes differ) is read again from the start. A last line still being
written is left for next time; at most ``READ_CAP`` bytes are read per invocation, the rest next
time.

Deduplication does not depend on that state: every ``llm_call`` is sent under the session's
transcript client id with a seq hashed from the response's ``message.id``
(``transcript.source_seq``), so the daemon drops a response already written, by the hook or by
``traced import``, whatever this state says (a crash between an ack and saving the state, a
transcript read again from the start).

Stdlib only (hot path). The state file is locked (``flock``) while it is used, so the hooks of
parallel subagents never read the same bytes at once; a hook that cannot get the lock in time
leaves the reading to the next one. (An import running at the same time needs no lock: the
daemon drops whichever copy of a record comes second.)
"""

from __future__ import annotations

import os
import time

from traced.format import vocab
from traced.format.layout import open_regular, valid_name
from traced.integrations.claude_code.transcript import CLIENT_ID, Reader, complete_lines, source_seq
from traced.integrations.hooks.claude_code import AGENT

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hook's start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final

    from traced.client.blocking import Client
    from traced.client.shell import ShellClient
    from traced.integrations.hooks.core import Plan

USAGE_EVENTS: Final = AGENT.stop_events
"""The hook events at which the transcript is read."""
READ_CAP: Final = 8 * 1024 * 1024
"""Bytes of transcript read per invocation, all files together (``TRACED_TRANSCRIPT_CAP`` overrides)."""
MAX_CALLS: Final = 500
"""API responses recorded per invocation at most; a backlog (hooks installed mid-conversation on a
long one) is worked off over the next events."""
STATE_MAX_AGE: Final = 30 * 86400
"""Read positions of sessions untouched this long are swept (at SessionEnd)."""
CHECK_BYTES: Final = 64
"""How many bytes before the offset are checked to see that the file was not rewritten."""


def state_root() -> str:
    """``<state>/transcripts``: where the hook keeps how far it read each session's transcripts."""
    from traced.locations import state_location

    return os.path.join(state_location(), "transcripts")


def read_cap() -> int:
    """``TRACED_TRANSCRIPT_CAP`` bytes, else ``READ_CAP``."""
    try:
        return max(1, int(os.environ.get("TRACED_TRANSCRIPT_CAP") or READ_CAP))
    except ValueError:
        return READ_CAP


def transcript_files(hook: dict[str, Any], session_id: str) -> list[tuple[str, str]]:
    """(path, agent_id) of the transcripts to read for one hook event.

    ``SubagentStop``: the subagent's own transcript (``agent_transcript_path``).
    Any other event: the main transcript and every subagent transcript under
    ``<project>/<session_id>/subagents/agent-<id>.jsonl``.
    """
    main = hook.get("transcript_path")
    agent_path = hook.get("agent_transcript_path")
    if hook.get("hook_event_name") == "SubagentStop" and isinstance(agent_path, str) and agent_path:
        return [(agent_path, _agent_of(agent_path, hook.get("agent_id")))]
    if not isinstance(main, str) or not main:
        return []
    files = [(main, "")]
    sub = os.path.join(os.path.dirname(main), session_id, "subagents")
    try:
        names = sorted(os.listdir(sub))
    except OSError:
        names = []
    for name in names:
        if name.startswith("agent-") and name.endswith(".jsonl"):
            files.append((os.path.join(sub, name), _agent_of(name, None)))
    return files


def _agent_of(path: str, given: Any) -> str:
    if isinstance(given, str) and given:
        return given
    name = os.path.basename(path)
    return name[6:-6] if name.startswith("agent-") and name.endswith(".jsonl") else ""


# ============================================================================ read positions


def lock_state(root: str, session_id: str, deadline: float) -> int | None:
    """The session's state file, open and locked; None when it cannot be had before ``deadline``."""
    import fcntl

    if not valid_name(session_id):
        return None
    try:
        _private_dirs(root)
        fd = os.open(os.path.join(root, f"{session_id}.json"),
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.005)
        except OSError:
            os.close(fd)
            return None


def _private_dirs(root: str) -> None:
    os.makedirs(os.path.dirname(os.path.dirname(root)), exist_ok=True)  # $XDG_STATE_HOME
    for level in (os.path.dirname(root), root):  # each one 0700, unlike makedirs
        if not os.path.isdir(level):
            try:
                os.mkdir(level, 0o700)
            except FileExistsError:
                pass


def load_state(fd: int) -> dict[str, list[int]]:
    """path -> [offset, inode, crc] from a locked state file ({} when empty or unreadable)."""
    import json

    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0) if size else b""
        value = json.loads(data) if data else {}
    except (OSError, ValueError):
        return {}
    files = value.get("files") if isinstance(value, dict) else None
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items()
            if isinstance(v, list) and len(v) == 3 and all(isinstance(x, int) for x in v)}


def save_state(fd: int, files: dict[str, list[int]]) -> None:
    """Rewrite the locked state file (a torn write only costs a read from the start)."""
    import json

    data = json.dumps({"v": 1, "files": files}, separators=(",", ":")).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def read_new(path: str, state: list[int] | None, cap: int) -> tuple[list[bytes], list[int], bool]:
    """The complete lines of ``path`` after ``state``'s offset (at most ``cap`` bytes, but always
    one whole line), the state after them, and whether more is left. Raises OSError."""
    import zlib

    fd = open_regular(path)  # a FIFO as transcript_path must not hang the agent's hook
    try:
        st = os.fstat(fd)
        offset, ino, check = state if state else (0, 0, 0)
        if st.st_ino != ino or st.st_size < offset:
            offset = 0
        elif offset:
            before = min(CHECK_BYTES, offset)
            if zlib.crc32(os.pread(fd, before, offset - before)) != check:
                offset = 0
        data = os.pread(fd, min(cap, st.st_size - offset), offset)
        lines, used = complete_lines(data)
        while not lines and offset + len(data) < st.st_size:  # one line longer than the cap: take it whole
            more = os.pread(fd, 1 << 20, offset + len(data))
            if not more:
                break
            data += more
            if b"\n" in more:
                data = data[: data.index(b"\n") + 1]
                lines, used = complete_lines(data)
        end = offset + used
        before = min(CHECK_BYTES, end)
        new_state = [end, st.st_ino, zlib.crc32(data[used - before : used] if used >= before
                                                else os.pread(fd, before, end - before))]
        return lines, new_state, end < st.st_size
    finally:
        os.close(fd)


FLUSH_WAIT: Final = 0.3
"""Seconds the hook waits, at most, for Claude Code to write the final message of the turn."""


def read_responses(path: str, state: list[int] | None, cap: int, *, session_id: str, agent: str,
                   wait_for: str | None, deadline: float) -> tuple[list[bytes], list[int], bool, Reader]:
    """``read_new`` then a ``Reader`` over the lines. With ``wait_for`` (the event's
    ``last_assistant_message``), while the lines do not hold it and the file is not complete, the
    file is read again as it grows, for ``FLUSH_WAIT`` seconds at most (Claude Code runs Stop hooks
    before it has always written the turn's last lines: anthropics/claude-code#15813, #40655).
    Raises OSError."""
    until = min(time.monotonic() + FLUSH_WAIT, deadline - 0.1)
    while True:
        lines, new_state, more = read_new(path, state, cap)
        reader = Reader(session_id, agent)
        reader.feed_all(lines)
        if wait_for is None or has_final(reader.calls(), wait_for) or more or time.monotonic() >= until:
            return lines, new_state, more, reader
        size = os.stat(path).st_size
        while os.stat(path).st_size == size and time.monotonic() < until:
            time.sleep(0.02)


def has_final(calls: list[Any], final: str) -> bool:
    """Whether the last responses read hold the turn's final message (``last_assistant_message``)."""
    want = " ".join(final.split())
    return any(" ".join(c.last_text.split()) == want for c in calls[-3:])


def cut_at(calls: list[Any], lines: int, more: bool, room: int) -> int:
    """How many of the ``lines`` read to take: all, or up to the first line of the last response
    when the read stopped short of the file's end (its next lines may hold its final usage), or of
    the first response past ``room``. Never 0 lines when there is a response: progress is made."""
    cut = lines
    if more and calls:
        cut = calls[-1].first_line
    if len(calls) > max(room, 1):
        cut = min(cut, calls[max(room, 1)].first_line)
    return cut if cut > 0 else lines


def state_at(path: str, offset: int) -> list[int]:
    """The read position ``[offset, inode, crc]`` of ``path`` at ``offset``. Raises OSError."""
    import zlib

    fd = open_regular(path)  # a FIFO as transcript_path must not hang the agent's hook
    try:
        before = min(CHECK_BYTES, offset)
        return [offset, os.fstat(fd).st_ino, zlib.crc32(os.pread(fd, before, offset - before))]
    finally:
        os.close(fd)


def sweep_states(root: str, max_age: float = STATE_MAX_AGE, now: float | None = None) -> None:
    """Remove the read positions of sessions untouched for ``max_age`` seconds."""
    cutoff = (now if now is not None else time.time()) - max_age
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        path = os.path.join(root, name)
        try:
            if name.endswith(".json") and os.stat(path).st_mtime < cutoff:
                os.unlink(path)
        except OSError:
            pass


# ============================================================================ the hook's part


def record_usage(hook: dict[str, Any], plan: Plan, socket_path: str | None, deadline: float,
                 opener: Callable[[Any, Plan], None]) -> int:
    """Record the ``llm_call`` records of the transcript lines written since the last time.

    ``deadline``: ``time.monotonic()`` seconds by which this part is done (the rest is spooled,
    or read next time). ``opener(client, plan)`` opens the plan's session when the daemon does not
    know it. Returns how many calls were sent (acknowledged or spooled); never raises.
    """
    try:
        return _record_usage(hook, plan, socket_path, deadline, opener)
    except Exception as e:  # the hook's own event must still be recorded
        import sys

        text = " ".join(str(e).split()) or type(e).__name__
        print(f"traced hook: transcript not read: {text[:200]}", file=sys.stderr)
        return 0


def _record_usage(hook: dict[str, Any], plan: Plan, socket_path: str | None, deadline: float,
                  opener: Callable[[Any, Plan], None]) -> int:
    sid = plan.session_id
    files = [(path, agent) for path, agent in transcript_files(hook, sid) if os.path.isfile(path)]
    if not files:  # no transcript (yet): no state file either
        return 0
    root = state_root()
    fd = lock_state(root, sid, deadline)
    if fd is None:
        return 0
    try:
        positions = load_state(fd)
        budget = read_cap()
        calls: list[Any] = []
        new_positions = dict(positions)
        final = hook.get("last_assistant_message") if plan.event in ("Stop", "SubagentStop") else None
        for n, (path, agent) in enumerate(files):
            if budget <= 0:
                break
            # the event's own final message is in the first file (the main one at Stop, the
            # subagent's at SubagentStop): Claude Code may not have written it yet (the Stop race)
            wait_for = final if not n and isinstance(final, str) and final.strip() else None
            try:
                lines, state, more, reader = read_responses(path, positions.get(path), budget, session_id=sid,
                                                            agent=agent, wait_for=wait_for, deadline=deadline)
            except OSError:
                continue
            size = sum(len(line) + 1 for line in lines)
            budget -= size
            got = reader.calls()
            cut = cut_at(got, len(lines), more, MAX_CALLS - len(calls))
            if wait_for is not None and reader.tail is not None and not has_final(got, wait_for):
                cut = min(cut, reader.tail.first_line)  # not all written yet: the next event takes it
            if cut < len(lines):  # stop before a response that may go on past what was read
                got = [c for c in got if c.first_line < cut]
                try:
                    state = state_at(path, state[0] - size + sum(len(line) + 1 for line in lines[:cut]))
                except OSError:
                    continue
            calls.extend(got)
            new_positions[path] = state
        calls.sort(key=lambda c: c.last_ts if c.last_ts is not None else float("inf"))
        sent = send_calls(plan, calls, socket_path, deadline, opener) if calls else 0
        if sent == len(calls):  # else read them again next time: the daemon drops what it has
            save_state(fd, new_positions)
        if plan.event == "SessionEnd":
            sweep_states(root)
        return sent
    finally:
        os.close(fd)


def send_calls(plan: Plan, calls: list[Any], socket_path: str | None, deadline: float,
               opener: Callable[[Any, Plan], None]) -> int:
    """Send ``calls`` (``transcript.Response``) as ``llm_call`` records; how many went (acked or spooled).

    The fast path pipelines them on the stdlib client; when the daemon is away or too slow, the
    full client spools them (the same client id and seqs: whatever did land is dropped as a replay).
    """
    from traced.client.shell import ShellClient

    try:
        with ShellClient(socket_path, name="traced-hook", client_id=CLIENT_ID, deadline=deadline) as fast:
            _pipeline(fast, plan, calls, opener)
        return len(calls)
    except OSError as e:
        from traced.client.blocking import Client

        left = deadline - time.monotonic()
        offline = isinstance(e, TimeoutError) or left <= 0.05
        sent = 0
        with Client(socket_path, name="traced-hook", timeout=max(left, 0.05), spool_after=max(left, 0.0),
                    client_id=CLIENT_ID, offline=offline) as client:
            if client.spooling:  # the spool cannot learn that the session is unknown: open it first
                opener(client, plan)
            for call in calls:
                _emit(client, plan, call, opener)
                sent += 1
        return sent


def _pipeline(client: ShellClient, plan: Plan, calls: list[Any], opener: Callable[[Any, Plan], None]) -> None:
    """Every call in one write; the session (re)opened once if the daemon does not know it."""
    from traced.client.shell import emit_msg
    from traced.errors import RequestError

    todo = list(calls)
    for attempt in (1, 2):
        msgs = [emit_msg(plan.session_id, vocab.LLM_CALL, c.payload(), source_seq("llm:" + c.key), ts=c.last_ts,
                         late=plan.late) for c in todo]
        replies = client.request_many(msgs)
        unknown = [c for c, r in zip(todo, replies, strict=True)
                   if r.get("op") == "error" and r.get("code") in ("unknown_session", "session_closed")]
        for reply in replies:  # one call the daemon refuses (too large, invalid) costs that call only
            if reply.get("op") == "error" and reply.get("code") not in (
                    "unknown_session", "session_closed", "invalid_event", "too_large"):
                raise RequestError(str(reply.get("code")), str(reply.get("message")))
        if not unknown or attempt == 2:
            return
        opener(client, plan)
        todo = unknown


def _emit(client: Client, plan: Plan, call: Any, opener: Callable[[Any, Plan], None]) -> None:
    from traced.errors import RequestError

    seq = source_seq("llm:" + call.key)
    payload = call.payload()
    reopened = False
    while True:
        try:
            client.emit(plan.session_id, vocab.LLM_CALL, payload, ts=call.last_ts, late=plan.late, seq=seq)
            return
        except RequestError as e:
            if e.code in ("unknown_session", "session_closed") and not reopened:
                opener(client, plan)
                reopened = True
            elif e.code in ("unknown_session", "session_closed", "invalid_event", "too_large"):
                return  # this call alone cannot be recorded
            else:
                raise
