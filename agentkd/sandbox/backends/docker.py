"""Docker backend: one container per episode, through the `docker` SDK (imported lazily).

The container has no network, memory and pids limits for the whole tree, a read-only root with tmpfs
/work and /tmp, every capability dropped, no-new-privileges, and runs as a non-root uid. The worker is
mounted read-only from this agentkd installation and connects back through a bind-mounted Unix socket, so
the daemon must be local (a `unix://` URL). Image: `agentkd/sandbox/image/Dockerfile`, or
`agentkd sandbox build-image` (its `build-image.sh`: debootstrap + `docker import`, no registry needed).
"""

from __future__ import annotations

import os
import threading
import time

from agentkd.sandbox.backends.base import SANDBOX_ENV, Backend, worker_command, worker_mounts

SOCKET_DIR = "/run/agentkd"


_lock = threading.Lock()
_clients: dict[str, object] = {}
_available: dict[tuple[str, str], float] = {}  # (host, image) -> when it last answered (cached 30 s)


def docker_host(config) -> str:
    return (config.docker_host or os.environ.get("AGENTKD_DOCKER_HOST") or os.environ.get("DOCKER_HOST")
            or "unix:///var/run/docker.sock")


class DockerBackend(Backend):
    name = "docker"

    def __init__(self, config, socket_dir, episodes: int = 1):
        super().__init__(config, socket_dir, episodes)
        self.client = None
        self.container: str | None = None  # container id

    @classmethod
    def _client(cls, config):
        """One SDK client per daemon URL for the whole process (creating one costs ~10 ms)."""
        host = docker_host(config)
        with _lock:
            client = _clients.get(host)
            if client is None:
                import docker

                client = _clients[host] = docker.DockerClient(base_url=host, timeout=60)
            return client

    @classmethod
    def unavailable(cls, config) -> str | None:
        try:
            import docker  # noqa: F401
        except ImportError:
            return "the docker SDK is not installed (pip install 'agentkd[docker]')"
        host = docker_host(config)
        if not host.startswith("unix://"):
            return f"{host}: the Docker backend needs a local daemon reached through a unix:// socket"
        if not os.path.exists(host[len("unix://"):]):
            return f"no Docker daemon socket at {host}"
        try:
            client = cls._client(config)
        except Exception as e:
            return f"the Docker daemon at {host} does not answer: {e}"
        key = (host, config.docker_image)
        cached = _available.get(key)
        if cached and time.monotonic() - cached < 30:
            return None
        try:
            client.ping()
            client.images.get(config.docker_image)
        except Exception as e:
            with _lock:
                _clients.pop(host, None)
            if type(e).__name__ == "ImageNotFound":
                return (f"image {config.docker_image} is missing from {host} "
                        "(build it with `agentkd sandbox build-image`)")
            return f"the Docker daemon at {host} does not answer: {e}"
        _available[key] = time.monotonic()
        return None

    def start(self, worker_cfg: dict, token: str) -> None:
        c = self.config
        if self.client is None:
            self.client = self._client(c)
        cfg = {**worker_cfg, "socket": f"{SOCKET_DIR}/ctl.sock", "workdir": "/work",
               "paths": ["/usr/lib/python3/dist-packages"],  # Debian python3-numpy/-sympy (the worker runs -S)
               "uid": None, "gid": None, "allow_root": False,
               "rlimits": self.rlimits({"memory": True, "pids": True})}
        api = self.client.api  # the low-level API: create + start, without the high-level extra inspect
        mounts = {self.socket_dir: {"bind": SOCKET_DIR, "mode": "rw"},
                  **{src: {"bind": dst, "mode": "ro"} for src, dst in worker_mounts()}}
        host_config = api.create_host_config(
            network_mode="none",
            mem_limit=f"{self.tree_limits()[0]}m",
            memswap_limit=f"{self.tree_limits()[0]}m",
            pids_limit=self.tree_limits()[1],
            read_only=True,
            tmpfs={"/work": f"size={c.work_dir_mb}m,mode=1777", "/tmp": "size=64m,mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            binds=mounts,
        )
        created = api.create_container(
            c.docker_image,
            command=worker_command("python3", cfg),
            user=f"{c.uid}:{c.gid}",
            environment={**SANDBOX_ENV, "AGENTKD_TOKEN": token},
            working_dir="/work",
            labels={"agentkd.sandbox": "1"},
            volumes=[m["bind"] for m in mounts.values()],
            # with networking disabled Docker sets up no libnetwork sandbox (no netns bind-mount, no
            # libnetwork-setkey prestart hook re-executing dockerd): runc gives the container a fresh, empty
            # network namespace (loopback only) by itself. ~85 ms of every start. network_mode "none" stays
            # as the fallback for a daemon that ignored the flag.
            network_disabled=True,
            host_config=host_config,
        )
        self.container = created["Id"]
        api.start(self.container)

    def _state(self) -> dict:
        try:
            return self.client.api.inspect_container(self.container).get("State", {})
        except Exception:
            return {}

    def alive(self) -> bool:
        return self.container is not None and self._state().get("Status") in ("created", "running")

    def diagnostics(self) -> str:
        try:
            return self.client.api.logs(self.container, tail=40).decode("utf-8", "replace") if self.container else ""
        except Exception:
            return ""

    def oom_killed(self) -> bool:
        return bool(self.container is not None and self._state().get("OOMKilled"))

    def kill(self) -> None:
        if self.container is not None:
            try:
                self.client.api.remove_container(self.container, force=True)
            except Exception:
                pass
            self.container = None
        self.client = None  # shared: never closed here
