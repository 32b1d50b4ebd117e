"""`agentkd sandbox`: see which sandbox backend runs model-written code here, and build its Docker image."""

from __future__ import annotations

import typer

app = typer.Typer(help="Inspect the code sandbox and build its Docker image.", no_args_is_help=True)

@app.command("check")
def check(
    backend: str = typer.Option("auto", help="auto, docker, bwrap or subprocess."),
    docker_host: str = typer.Option(None, help="Docker daemon URL (default: $AGENTKD_DOCKER_HOST, $DOCKER_HOST)."),
) -> None:
    """Start a sandbox and print the backend and which walls its worker found up (measured inside it)."""
    from agentkd.sandbox import Sandbox, SandboxConfig, SandboxError, choose_backend
    from agentkd.sandbox.backends import AUTO_ORDER, backend_class

    cfg = SandboxConfig(backend=backend, docker_host=docker_host)  # type: ignore[arg-type]
    for name in AUTO_ORDER if backend == "auto" else (backend,):
        why = backend_class(name).unavailable(cfg)
        typer.echo(f"{name:<11} {'available' if why is None else 'unavailable: ' + why}")
    try:
        choose_backend(cfg)
        with Sandbox(cfg) as sb:
            report = sb.isolation_report()
            probe = sb.run("import os\nprint(os.getuid())")
            typer.echo(f"backend: {sb.backend}   worker start: {sb.start_time_s * 1000:.0f} ms   "
                       f"code runs as uid {probe.stdout.strip() or '?'}")
    except SandboxError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    typer.echo("walls, as the worker found them inside the sandbox:")
    for k, wall in report.items():
        verdict = {True: "yes", False: "NO", None: "unknown"}[wall["ok"]]
        typer.echo(f"  {k:<13} {verdict:<8} {wall['why']}")


@app.command("build-image")
def build_image(
    docker_host: str = typer.Option(None, help="Docker daemon URL (default: $AGENTKD_DOCKER_HOST, $DOCKER_HOST)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the image exists."),
) -> None:
    """Build the sandbox image offline (debootstrap + docker import; needs root and a Debian mirror)."""
    import subprocess
    from importlib import resources

    # the script and Dockerfile are package data (agentkd/sandbox/image/)
    script = resources.files("agentkd.sandbox").joinpath("image").joinpath("build-image.sh")
    with resources.as_file(script) as path:
        cmd = ["bash", str(path), *(["--docker-host", docker_host] if docker_host else []),
               *(["--force"] if force else [])]
        code = subprocess.call(cmd)
    raise typer.Exit(code)
