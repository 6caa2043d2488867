"""Gemini CLI's table for the shared hook core (geminicli.com/docs/hooks/reference;
google-gemini/gemini-cli ``packages/core/src/hooks``).

BeforeAgent is the prompt, BeforeTool/AfterTool the tool call and result (paired
by the call clock: Gemini CLI sends no call id), AfterModel's last chunk of a
response an ``llm_call`` with the model and its ``usageMetadata``; BeforeModel
only starts that call's clock (``latency_ms``). AfterAgent, PreCompress and
Notification are ``hook`` records. Gemini CLI reads a hook's stdout as JSON:
the hook prints nothing. Hot path: plain data only.
"""

from __future__ import annotations

from traced.integrations.hooks.core import CALL, END, MODEL_REQUEST, MODEL_RESPONSE, PROMPT, RESULT, START, Agent

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the hook's start-up
if TYPE_CHECKING:
    from typing import Final

AGENT: Final = Agent(
    "gemini",
    {
        "SessionStart": START, "BeforeAgent": PROMPT, "BeforeTool": CALL, "AfterTool": RESULT,
        "SessionEnd": END, "BeforeModel": MODEL_REQUEST, "AfterModel": MODEL_RESPONSE,
    },
    name_keys={"SessionStart": "source", "PreCompress": "trigger", "Notification": "notification_type"},
    common=frozenset({"transcript_path", "timestamp"}),
    labels=("transcript_path",),
    success_reasons=frozenset({"exit", "clear", "logout", "prompt_input_exit"}),
    call_id_key=None,
    provider="google",
    stop_events=frozenset({"AfterAgent", "PreCompress", "SessionEnd"}),
)

INSTALL_EVENTS: Final = (
    ("SessionStart", (0,)), ("SessionEnd", (0,)), ("BeforeAgent", (0,)), ("AfterAgent", (0,)),
    ("BeforeModel", (0,)), ("AfterModel", (0,)), ("BeforeTool", (0,)), ("AfterTool", (0,)),
    ("PreCompress", (0,)), ("Notification", (0,)),
)
TOOL_EVENTS: Final = ()
"""No matcher: Gemini CLI's tool matcher is a regex, and a group without one matches every tool."""
TIMEOUTS: Final[dict[str, int]] = {}
TIMEOUT: Final = 2000
"""Milliseconds (Gemini CLI's unit; its default is 60000)."""
