"""Tool calling for models without native tool support: instructions in, JSON out.

With ``tool_choice`` "any"/"required"/a tool name, the reply is grammar-constrained to
``{"name": <tool>, "arguments": {...}}`` matching the tool's JSON schema, so it always parses.
With "auto", the model is told how to call a tool and its reply is parsed: a JSON object
naming a bound tool becomes a tool call, anything else stays text.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from typing import Any

from llamachain.errors import ConfigError

ToolSpec = dict[str, Any]  # OpenAI tool format: {"type": "function", "function": {...}}


def tool_names(tools: Sequence[ToolSpec]) -> list[str]:
    return [t["function"]["name"] for t in tools]


def resolve_choice(tools: Sequence[ToolSpec], tool_choice: Any) -> str | None:
    """Normalise tool_choice: None/"auto" -> "auto"; "none" -> None; else a forced mode.

    Returns "auto", "any", a tool name, or None (tools disabled).
    """
    names = tool_names(tools)
    if tool_choice in (None, "auto", False):
        return "auto"
    if tool_choice == "none":
        return None
    if tool_choice in ("any", "required", True):
        return "any"
    if isinstance(tool_choice, dict):
        tool_choice = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    if isinstance(tool_choice, str):
        if tool_choice not in names:
            raise ConfigError(
                f"tool_choice {tool_choice!r} is not a bound tool; choose one of: "
                f"{', '.join(names)}, 'auto', 'any', 'none'"
            )
        return tool_choice
    raise ConfigError(f"unsupported tool_choice {tool_choice!r}")


def _parameters(tool: ToolSpec) -> dict[str, Any]:
    params = dict(tool["function"].get("parameters") or {})
    params.setdefault("type", "object")
    params.setdefault("properties", {})
    return params


def call_schema(tools: Sequence[ToolSpec], choice: str) -> dict[str, Any]:
    """JSON schema of one tool call; ``choice`` is "any" or a tool name."""
    chosen = [t for t in tools if choice == "any" or t["function"]["name"] == choice]
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": t["function"]["name"]},
                "arguments": _parameters(t),
            },
            "required": ["name", "arguments"],
        }
        for t in chosen
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def instructions(tools: Sequence[ToolSpec], choice: str) -> str:
    listing = "\n".join(
        json.dumps(
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "parameters": _parameters(t),
            }
        )
        for t in tools
    )
    how = (
        'To call a tool, reply with only a JSON object {"name": <tool name>, "arguments": '
        "<arguments object>}."
    )
    if choice == "auto":
        how += " If no tool is needed, answer normally in plain text."
    else:
        how += " You must call a tool now."
    return f"You can use these tools:\n{listing}\n{how}"


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
_TAGS = re.compile(r"^<tool_call>\s*(.*?)\s*(?:</tool_call>)?$", re.S)


def parse_call(text: str, tools: Sequence[ToolSpec]) -> dict[str, Any] | None:
    """A LangChain tool call if ``text`` is a JSON call of a bound tool, else None."""
    s = text.strip()
    for pattern in (_FENCE, _TAGS):
        m = pattern.match(s)
        if m:
            s = m.group(1).strip()
    if not s.startswith("{"):
        return None
    try:
        data = json.loads(s)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    name = data.get("name")
    args = data.get("arguments", data.get("parameters", {}))
    if name not in tool_names(tools) or not isinstance(args, dict):
        return None
    return {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:24]}", "type": "tool_call"}


def could_be_call(prefix: str) -> bool:
    """While streaming in auto mode: could text starting like this still become a call?"""
    s = prefix.lstrip()
    return s == "" or s[0] in "{`<"


def render_calls(tool_calls: Sequence[Any]) -> str:
    """How an earlier assistant tool call is shown back to the model in the prompt."""
    return "\n".join(
        json.dumps({"name": c["name"], "arguments": c.get("args", {})}) for c in tool_calls
    )
