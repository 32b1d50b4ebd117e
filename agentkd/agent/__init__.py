"""The CodeAct agent: prompts (data files), action parsing, first-thought prefix, the episode loop."""

from agentkd.agent.config import AgentConfig
from agentkd.agent.loop import first_thought_prefix, run_episode
from agentkd.agent.parse import parse_action

__all__ = ["AgentConfig", "first_thought_prefix", "parse_action", "run_episode"]
