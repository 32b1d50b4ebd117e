"""`CollectConfig`: a teacher trajectory collection run (recipe section `collect`)."""

from __future__ import annotations

from pydantic import Field

from agentkd.agent.config import AgentConfig
from agentkd.core.config import StrictConfig
from agentkd.core.tasks import TaskSource
from agentkd.models.config import ModelConfig
from agentkd.models.wrappers import ClientConfig
from agentkd.sandbox.config import SandboxConfig
from agentkd.tools.config import ToolsConfig


class CollectConfig(StrictConfig):
    """Tasks × samples → teacher trajectories in runs/NAME/trajectories.jsonl (resumable)."""

    tasks: TaskSource = Field(description="Which tasks to solve (suite, file or HF dataset).")
    teacher: ModelConfig = Field(default_factory=ModelConfig, description="The teacher model and its sampling defaults.")
    client: ClientConfig = Field(default_factory=ClientConfig, description="Concurrency, rate limits, retries, prices, budget.")
    agent: AgentConfig = Field(default_factory=AgentConfig, description="Episode loop: prompt, max steps, FTP.")
    tools: ToolsConfig = Field(default_factory=ToolsConfig, description="Tools callable from the agent's code.")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description="Where the agent's code runs.")
    samples: int = Field(default=1, ge=1, description="Trajectories per task (each with its own seed).")
    seed: int = Field(default=0, description="Base seed; sample s of a task uses seed + s.")
    concurrency: int = Field(default=16, ge=1, description="Episodes in flight at once.")
    out: str | None = Field(default=None, description="Run folder (default: runs/<recipe name>).")
