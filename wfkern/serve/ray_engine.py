"""``wfkern serve --engine ray``: the same request handler as a Ray Serve deployment.

The model runs in ``--replicas`` Ray Serve replicas; each batches the requests that reach it with ``@serve.batch``
(the forget set travels in the payload: no model multiplexing) and answers them with ONE forward, exactly as
LitServe's worker does (``wfkern.serve.handler``). API v1 (keys, registry, checks, metrics, the page) is the same
front (``wfkern.serve.front``), run on uvicorn in this process and calling the deployment through its handle;
Ray's own HTTP proxy is not started. Needs ``ray[serve]`` (not a dependency of the ``serve`` extra: heavy).
"""

from __future__ import annotations

import sys

from wfkern.serve.front import Front, ServerInfo
from wfkern.serve.handler import decode_payload, load_served, predict_batch
from wfkern.serve.inputs import Limits
from wfkern.serve.server import NO_AUTH_WARNING, _check_numbers, run_uvicorn

__all__ = ["ForgetDeployment", "build_ray_front", "run_ray"]


class ForgetDeployment:
    """The request handler as a Ray Serve deployment class (wrapped by ``serve.deployment`` in ``deployment``).

    Args: as ``wfkern.serve.load_served``, plus the request limits, torch threads and the batching window.
    """

    def __init__(self, checkpoint: str, gates: str | None, mode: str, class_names: list[str], limits: Limits,
                 threads: int | None, device: str, max_batch_size: int, batch_timeout: float) -> None:
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        self.served = load_served(checkpoint, gates, mode=mode, device=device, class_names=class_names)
        self.limits = limits
        self.predict_many.set_max_batch_size(max_batch_size)
        self.predict_many.set_batch_wait_timeout_s(batch_timeout)

    async def predict_many(self, payloads: list[dict]) -> list[dict]:
        """One forward for every request of the batch (replaced by its ``@serve.batch`` form in ``deployment``)."""
        return predict_batch([decode_payload(p, self.served, self.limits) for p in payloads], self.served)

    async def __call__(self, payload: dict) -> dict:
        return await self.predict_many(payload)


def deployment(replicas: int):
    """``ForgetDeployment`` as a Ray Serve deployment with ``replicas`` replicas and ``@serve.batch``."""
    from ray import serve

    batched = type("ForgetDeploymentBatched", (ForgetDeployment,), {
        "predict_many": serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)(ForgetDeployment.predict_many),
        "__module__": __name__})
    return serve.deployment(batched, name="wfkern_forget", num_replicas=replicas, max_ongoing_requests=256,
                            ray_actor_options={"num_cpus": 0.25})


def build_ray_front(checkpoint: str, gates: str | None = None, *, replicas: int = 1, registry: str | None = None,
                    no_auth: bool = False, mode: str = "wf", max_batch_size: int = 16, batch_timeout: float = 0.005,
                    max_queue: int = 256, limits: Limits = Limits(), top_k: int = 5, threads: int | None = None,
                    device: str = "cpu", class_names: list[str] | None = None, request_timeout: float = 30.0,
                    ray_init: dict | None = None):
    """(FastAPI app of API v1, stop()) with the model in a Ray Serve deployment on a local Ray instance."""
    import ray
    from fastapi import FastAPI
    from ray import serve

    from wfkern.serve.registry import SQLiteForgetStore

    _check_numbers(max_batch_size, batch_timeout, max_queue, top_k, replicas, request_timeout)
    if registry is not None and no_auth:
        raise ValueError(f"wfkern.serve: registry must be left out with no_auth, got {registry!r}")
    served = load_served(checkpoint, gates, mode=mode, device="cpu", class_names=class_names)
    info = ServerInfo(served.class_names, mode, served.model_fingerprint, served.gates_fingerprint)
    del served
    store = SQLiteForgetStore(registry, num_classes=len(info.class_names)) if registry else None
    if not ray.is_initialized():
        ray.init(**{"include_dashboard": False, "log_to_driver": False, **(ray_init or {})})
    serve.start(proxy_location="Disabled")
    app_handle = serve.run(deployment(replicas).bind(checkpoint, gates, mode, list(info.class_names), limits,
                                                     threads, device, max_batch_size, batch_timeout),
                           name="wfkern", route_prefix=None)

    async def submit(payload: dict) -> dict:
        return await app_handle.remote(payload)

    app = FastAPI()
    Front(info, submit, store=store, no_auth=no_auth, limits=limits, max_queue=max_queue, top_k=top_k,
          request_timeout=request_timeout).install(app)

    def stop() -> None:
        serve.shutdown()
        ray.shutdown()

    return app, stop


def run_ray(checkpoint: str, gates: str | None, *, host: str, port: int, replicas: int, **options) -> int:
    """Serve API v1 on uvicorn with the model in Ray Serve replicas; SIGTERM drains, then Ray stops."""
    try:
        import ray  # noqa: F401
    except ImportError as e:
        raise RuntimeError("wfkern.serve: --engine ray needs Ray Serve; pip install 'ray[serve]'") from e
    if options.get("no_auth"):
        print(NO_AUTH_WARNING, file=sys.stderr, flush=True)
    app, stop = build_ray_front(checkpoint, gates, replicas=replicas, **options)
    run_uvicorn(app, host, port, f"Ray Serve, {replicas} replica{'s' if replicas != 1 else ''}", stop=stop)
    return 0
