"""A scripted model: each run's conversation picks its script by a `SCRIPT:<name>` marker.

The reply depends only on the conversation (which script, how many assistant turns
so far), so concurrent runs, replays and leftover runs of earlier tests never steal
each other's answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from tests.support.upstream import ReceivedRequest, Reply, UpstreamServer

MARKER = re.compile(r"SCRIPT:([A-Za-z0-9_-]+)")
Turn = Reply | Callable[[list[dict[str, Any]]], Reply]


def bash(command: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return ("bash", {"command": command, **extra})


def write(path: str, content: str) -> tuple[str, dict[str, Any]]:
    return ("write_file", {"path": path, "content": content})


def finish(result: Any) -> tuple[str, dict[str, Any]]:
    return ("finish", {"result": result})


class _Forever:
    """Stands in for the server's reply queue: always the same dynamic reply."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply

    def __bool__(self) -> bool:
        return True

    def popleft(self) -> Reply:
        return self.reply

    def extend(self, _replies: Any) -> None:
        raise RuntimeError("use ScriptedModel.script() instead of push()")

    def clear(self) -> None:
        pass


class ScriptedModel:
    """Holds named scripts: lists of turns (a Reply, or a function of the messages)."""

    def __init__(self, upstream: UpstreamServer) -> None:
        self.upstream = upstream
        self.scripts: dict[str, list[Turn]] = {}
        upstream.replies = _Forever(Reply.dynamic(self._respond))  # type: ignore[assignment]

    def script(self, name: str, *turns: Turn) -> str:
        self.scripts[name] = list(turns)
        return f"SCRIPT:{name}"

    def _respond(self, request: ReceivedRequest) -> Reply:
        body = request.json or {}
        messages = body.get("messages") or []
        text = " ".join(
            m.get("content") or ""
            for m in messages
            if m.get("role") == "user" and isinstance(m.get("content"), str)
        )
        match = MARKER.search(text)
        if match is None or match.group(1) not in self.scripts:
            return Reply.completion("no script for this conversation")
        turns = self.scripts[match.group(1)]
        index = sum(1 for m in messages if m.get("role") == "assistant")
        if index >= len(turns):
            turn: Turn = turns[-1]  # repeat the last turn (loops for limit tests)
        else:
            turn = turns[index]
        return turn(messages) if callable(turn) else turn

    def requests_for(self, name: str) -> list[dict[str, Any]]:
        return [r.json for r in self.upstream.requests if f"SCRIPT:{name}" in json.dumps(r.json)]


def tool_turn(*calls: tuple[str, dict[str, Any]]) -> Reply:
    return Reply.tool_calls(list(calls))
