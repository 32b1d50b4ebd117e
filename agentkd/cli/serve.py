"""`agentkd serve`: an OpenAI-compatible server for local models."""

from __future__ import annotations

from pathlib import Path

import typer


def serve(
    model: str = typer.Argument("embedded:smollm2-135m", help="embedded:NAME, local:PATH, or an HF folder / .gguf path."),
    adapter: Path = typer.Option(None, "--adapter", help="LoRA adapter folder to apply."),
    host: str = typer.Option("127.0.0.1", help="Bind address (loopback by default)."),
    port: int = typer.Option(8000, help="TCP port (0 = pick a free one; the URL is printed)."),
    served_name: str = typer.Option(None, "--served-name", help="Model id clients send (default: MODEL)."),
    device: str = typer.Option("auto", help="cpu, cuda, cuda:N or auto."),
    config: Path = typer.Option(None, "--config", "-c", help="Recipe whose `serve:` section gives defaults."),
    set_: list[str] = typer.Option([], "--set", help="Override serve.KEY=VALUE (repeatable)."),
) -> None:
    """Serve a local model over an OpenAI-compatible API (/v1/chat/completions, /v1/models).

    Supports n, temperature, top_p, max_tokens, stop, seed, and assistant prefill via
    extra_body={"continue_final_message": true, "add_generation_prompt": false} as vLLM does.
    """
    from agentkd.core.config import load_config
    from agentkd.serve.app import run_server
    from agentkd.serve.config import ServeConfig

    cli = [f"model={model}", f"host={host}", f"port={port}", f"device={device}"]
    if adapter:
        cli.append(f"adapter={adapter}")
    if served_name:
        cli.append(f"served_name={served_name}")
    overrides = [s.removeprefix("serve.") for s in set_]
    cfg = load_config(ServeConfig, config, section="serve" if config else None, overrides=cli + overrides)
    run_server(cfg)
