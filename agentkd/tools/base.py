"""The tool protocol: a typed host callable with a name, description, input schema and output type.

Tools run on the host. Sandboxed code calls them as plain callables through the sandbox's tool bridge
(`tool(*args, **kwargs)`), so `Tool.__call__` binds positional and keyword arguments to `inputs` in order,
checks their types and raises the builtin `TypeError` with a one-line message on bad calls: the exception a
Python function raises for bad arguments, so it crosses the sandbox bridge unchanged and agent code can
catch it as usual. Failures of the tool itself raise `ToolError`.
Subclasses set the class attributes and implement `forward(**kwargs)`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from typing import Any, ClassVar

# JSON-schema-ish type names -> accepted Python types and the name shown in a prompt signature.
_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "string": ((str,), "str"),
    "integer": ((int,), "int"),
    "number": ((int, float), "float"),
    "boolean": ((bool,), "bool"),
    "array": ((list, tuple), "list"),
    "object": ((dict,), "dict"),
    "any": ((object,), "Any"),
}


class ToolError(Exception):
    """A tool failed; the message is meant to be shown to the agent."""


def _check_type(tool: str, name: str, value: Any, spec: dict[str, Any]) -> None:
    if value is None and spec.get("nullable"):
        return
    kind = spec.get("type", "any")
    accepted = _TYPES[kind][0]
    bad = not isinstance(value, accepted) or (kind in ("integer", "number") and isinstance(value, bool))
    if bad:
        raise TypeError(f"{tool}(): argument {name!r} must be {kind}, got {type(value).__name__} ({value!r:.60})")


class Tool:
    """Base class for tools. Subclasses set `name`, `description`, `inputs`, `output_type` and `forward`.

    `inputs` maps each argument name to `{"type": ..., "description": ...}` (optionally `"nullable": True`
    and `"default": value` for optional arguments), in call order.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    inputs: ClassVar[dict[str, dict[str, Any]]] = {}
    output_type: ClassVar[str] = "string"

    def __init__(self) -> None:
        self.validate_spec()

    # ---- metadata -------------------------------------------------------------------------------------------
    def validate_spec(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"tool name {self.name!r} is not a Python identifier")
        for arg, spec in self.inputs.items():
            if spec.get("type", "any") not in _TYPES:
                raise ValueError(f"tool {self.name}: input {arg!r} has unknown type {spec.get('type')!r}")
            if not spec.get("description"):
                raise ValueError(f"tool {self.name}: input {arg!r} needs a description")
        if self.output_type not in _TYPES:
            raise ValueError(f"tool {self.name}: unknown output type {self.output_type!r}")

    def config_hash(self) -> str:
        """Identifies everything besides the arguments that changes the output (cache keys include it)."""
        return "0"

    def signature(self) -> str:
        parts = []
        for arg, spec in self.inputs.items():
            s = f"{arg}: {_TYPES[spec.get('type', 'any')][1]}"
            if "default" in spec or spec.get("nullable"):
                s += f" = {spec.get('default')!r}"
            parts.append(s)
        return f"def {self.name}({', '.join(parts)}) -> {_TYPES[self.output_type][1]}:"

    def to_prompt(self) -> str:
        """This tool as a Python signature with a docstring, the way a CodeAct system prompt lists tools."""
        doc = [self.description.strip()]
        if self.inputs:
            doc += ["", "Args:"]
            doc += [f"    {arg}: {spec['description']}" for arg, spec in self.inputs.items()]
        body = textwrap.indent('"""' + "\n".join(doc) + '\n"""', "    ")
        return f"{self.signature()}\n{body}"

    def to_json_schema(self) -> dict[str, Any]:
        """OpenAI-style function schema (for models that call tools natively instead of writing code)."""
        props = {}
        for arg, spec in self.inputs.items():
            p: dict[str, Any] = {"description": spec["description"]}
            if spec.get("type", "any") != "any":
                p["type"] = spec["type"]
            if "default" in spec:
                p["default"] = spec["default"]
            props[arg] = p
        required = [a for a, spec in self.inputs.items() if "default" not in spec and not spec.get("nullable")]
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": {"type": "object", "properties": props,
                                                                "required": required}}}

    # ---- calling --------------------------------------------------------------------------------------------
    def bind(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Map positional and keyword arguments onto `inputs`, fill defaults and check types."""
        names = list(self.inputs)
        if len(args) > len(names):
            raise TypeError(f"{self.name}() takes {len(names)} argument(s) but {len(args)} were given")
        bound = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key not in self.inputs:
                raise TypeError(f"{self.name}() got an unexpected argument {key!r} (expects: {', '.join(names)})")
            if key in bound:
                raise TypeError(f"{self.name}() got multiple values for argument {key!r}")
            bound[key] = value
        for arg, spec in self.inputs.items():
            if arg not in bound:
                if "default" in spec or spec.get("nullable"):
                    bound[arg] = spec.get("default")
                else:
                    raise TypeError(f"{self.name}() missing required argument {arg!r}")
            _check_type(self.name, arg, bound[arg], spec)
        return bound

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(**self.bind(*args, **kwargs))

    def forward(self, **kwargs: Any) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.signature()[4:-1]}>"


def render_tools(tools: Iterable[Tool]) -> str:
    """The whole tool list for a system prompt: each tool's `to_prompt()`, separated by blank lines."""
    return "\n\n".join(t.to_prompt() for t in tools)
