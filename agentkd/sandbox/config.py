"""`SandboxConfig`: which backend runs model-written code, and under which limits."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from agentkd.core.config import StrictConfig

BackendName = Literal["auto", "docker", "forkserver", "bwrap", "unshare", "subprocess"]
EpisodeIsolation = Literal["container", "process"]


class SandboxConfig(StrictConfig):
    """Limits and backend choice for one agent episode's persistent Python worker."""

    backend: BackendName = Field(
        default="auto",
        description="auto (docker when a daemon answers and the image exists, else forkserver when agentkd runs as "
        "root, else bwrap, else unshare, else subprocess), docker, forkserver (the unshare backend's walls; each "
        "sandbox forked from a pre-started zygote: ~5 ms CPU per start instead of ~25), bwrap, unshare, or "
        "subprocess (no isolation beyond a uid and rlimits; warns loudly).",
    )
    episode_isolation: EpisodeIsolation = Field(
        default="container",
        description="How SandboxPool (the collection runner) separates episodes. process: episodes are forked "
        "from a pristine template kernel in a shared warm sandbox (~ms each): separate processes, session, fresh "
        "variables and private work dir, but the same uid, container, pid namespace and cgroup, so code that "
        "deliberately targets another episode can reach it (opt in for throughput). container (default): a new "
        "sandbox per episode (~5 ms CPU each with forkserver, the default as root; ~25 ms with bwrap). The host boundary (network, filesystem, uid, seccomp, limits, env) is the same in both.",
    )
    episodes_per_container: int = Field(
        default=16, ge=1, le=256,
        description="process mode: episodes sharing one sandbox; its memory, process and work-dir limits are "
        "multiplied by this (per-process rlimits are not).",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Soft wall-time limit per run (interrupts, keeps state).")
    hard_timeout_grace_s: float = Field(
        default=2.0, gt=0, description="Extra seconds after the soft limit before the worker is killed and restarted."
    )
    memory_mb: int = Field(default=1024, ge=64, description="Memory limit for the sandbox's whole process tree.")
    max_procs: int = Field(default=64, ge=4, description="Maximum number of processes/threads in the sandbox.")
    cpu_time_s: int = Field(default=600, ge=1, description="CPU-seconds limit per sandbox process (RLIMIT_CPU).")
    max_file_mb: int = Field(default=64, ge=1, description="Largest file a sandboxed process may write (RLIMIT_FSIZE).")
    work_dir_mb: int = Field(default=256, ge=1, description="Size of the private writable work dir (tmpfs; not "
                             "enforced by the subprocess backend, whose work dir is a host temp folder).")
    max_output_bytes: int = Field(
        default=20000, ge=100, description="stdout/stderr kept per run; the rest is dropped with a visible marker."
    )
    allowed_imports: list[str] | None = Field(
        default=["stdlib", "numpy", "sympy", "mpmath"],
        description="Top-level modules user code may import ('stdlib' = the standard library, '*' or null = any "
        "module present in the sandbox). A convenience policy; isolation is the security boundary.",
    )
    uid: int = Field(default=65534, ge=1, description="Non-root uid the code runs as when agentkd runs as root.")
    gid: int = Field(default=65534, ge=1, description="Group id matching `uid`.")
    python: str | None = Field(
        default=None, description="Interpreter for bwrap/subprocess workers (default: the host's base interpreter)."
    )
    extra_ro_paths: list[str] = Field(
        default_factory=list, description="Host paths bind-mounted read-only into the bwrap sandbox (same path)."
    )
    docker_host: str | None = Field(
        default=None,
        description="Docker daemon URL (default: $AGENTKD_DOCKER_HOST, then $DOCKER_HOST, then the local socket).",
    )
    docker_image: str = Field(default="agentkd-sandbox:latest", description="Image with python3 (+numpy, sympy).")
    start_timeout_s: float = Field(default=30.0, gt=0, description="How long to wait for a new worker to connect.")
    allow_unsafe: bool = Field(
        default=False,
        description="Permit the subprocess backend to run code as root (never needed when agentkd runs as root "
        "with a uid to drop to).",
    )


def resolve_config(config: SandboxConfig | None, overrides: dict[str, Any]) -> SandboxConfig:
    """`config` (default: a fresh `SandboxConfig`) with keyword `overrides` applied and validated."""
    if config is None:
        return SandboxConfig(**overrides)
    return SandboxConfig.model_validate({**config.model_dump(), **overrides}) if overrides else config
