"""``wfkern serve`` on LitServe: the model runs in LitServe's inference worker process (its batching loop calls
``WFLitAPI``), the HTTP API v1 runs in this process on uvicorn, in the main thread, so SIGTERM drains: uvicorn stops
accepting connections, answers every request in flight (the worker still runs), then the worker is stopped.

Built on LitServe's worker, queues and response buffer (pinned: litserve==0.2.19); its own routes are replaced by
API v1 (``wfkern.serve.front``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
import uuid

from wfkern.serve.front import Front, ServerInfo
from wfkern.serve.handler import load_served
from wfkern.serve.inputs import Limits

__all__ = ["WFServer", "build_app", "run_uvicorn", "NO_AUTH_WARNING"]

log = logging.getLogger("wfkern.serve")

NO_AUTH_WARNING = ("WARNING: wfkern serve runs with --no-auth: ANY client that reaches this port can call it, no "
                   "API keys are checked and no tenant's forgotten classes are applied (only the classes each "
                   "request names). Use it for local experiments only.")


def _require_litserve():
    try:
        import litserve  # noqa: F401
    except ImportError as e:  # pragma: no cover - the optional extra
        raise RuntimeError("wfkern.serve: needs litserve, prometheus-client and pillow; pip install "
                           "'wfkern[serve]'") from e


class WFServer:
    """A served checkpoint: ``app`` (the FastAPI app of API v1) and ``run(host, port)``.

    Args:
        checkpoint, gates: the model and its gates (``gates`` may be None with ``mode="plain"``).
        registry: the forget registry's SQLite file (``wfkern registry init``); None needs ``no_auth``.
        no_auth: serve without keys or registry (prints a loud warning at start-up).
        mode: "wf", "plain" or "baked" (``wfkern.serve.handler``).
        max_batch_size, batch_timeout: the batching window: requests arriving within ``batch_timeout`` seconds,
            up to ``max_batch_size``, share one forward.
        max_queue: predict requests in flight before the server answers 503.
        limits: per-request limits.  top_k: classes per image by default.
        threads: torch threads in the worker.  device: "cpu" or "cuda[:N]".  class_names: one per class.
        workers: model worker processes.  request_timeout: seconds before a request is answered 504.
    """

    def __init__(self, checkpoint: str, gates: str | None = None, *, registry: str | None = None,
                 no_auth: bool = False, mode: str = "wf", max_batch_size: int = 16, batch_timeout: float = 0.005,
                 max_queue: int = 256, limits: Limits = Limits(), top_k: int = 5, threads: int | None = None,
                 device: str = "cpu", class_names: list[str] | None = None, workers: int = 1,
                 request_timeout: float = 30.0) -> None:
        _require_litserve()
        import litserve as ls

        from wfkern.serve.litapi import WFLitAPI
        from wfkern.serve.registry import SQLiteForgetStore

        _check_numbers(max_batch_size, batch_timeout, max_queue, top_k, workers, request_timeout)
        if registry is not None and no_auth:
            raise ValueError("wfkern.serve: registry must be left out with no_auth (no keys, no tenants), got "
                             f"{registry!r}")
        served = load_served(checkpoint, gates, mode=mode, device="cpu", class_names=class_names)  # checks all
        self.info = ServerInfo(served.class_names, mode, served.model_fingerprint, served.gates_fingerprint)
        del served
        store = SQLiteForgetStore(registry, num_classes=len(self.info.class_names)) if registry else None
        self.no_auth = no_auth
        self.lit_api = WFLitAPI(checkpoint, gates, mode=mode, class_names=self.info.class_names, limits=limits,
                                threads=threads, max_batch_size=max_batch_size, batch_timeout=batch_timeout)
        accel = "cpu" if device == "cpu" else "cuda"
        devices = 1 if accel == "cpu" else [int(device.partition(":")[2] or 0)]
        self.lit = ls.LitServer(self.lit_api, accelerator=accel, devices=devices, workers_per_device=workers,
                                timeout=request_timeout)
        self.app = self.lit.app
        drop = {"/", "/health", "/info", self.lit_api.api_path}
        self.app.router.routes[:] = [r for r in self.app.router.routes if getattr(r, "path", None) not in drop]
        self.front = Front(self.info, self._submit, store=store, no_auth=no_auth, limits=limits, max_queue=max_queue,
                           top_k=top_k, ready=self._ready, request_timeout=request_timeout)
        self.front.install(self.app)
        self._manager = None

    def _ready(self) -> bool:
        from litserve.utils import WorkerSetupStatus

        status = getattr(self.lit, "workers_setup_status", None)
        workers = getattr(self.lit, "inference_workers", [])
        return bool(status) and all(v == WorkerSetupStatus.READY for v in status.values()) and \
            all(w.is_alive() for w in workers)

    async def _submit(self, payload: dict) -> dict:
        """Put a checked payload on LitServe's request queue and wait for the worker's answer."""
        from litserve.utils import LitAPIStatus, ResponseBufferItem

        workers = getattr(self.lit, "inference_workers", [])
        if not workers or not any(w.is_alive() for w in workers):  # a local check: no queue round trip
            return {"error": {"status": 503, "message": "the model worker must be running, got none alive; "
                                                        "restart the server"}}
        uid = str(uuid.uuid4())
        event = asyncio.Event()
        buffer = self.lit.response_buffer
        buffer[uid] = ResponseBufferItem(event)
        try:
            self.lit._get_request_queue(self.lit_api.api_path).put((self.app.response_queue_id, uid,
                                                                    time.monotonic(), payload))
            await event.wait()
        finally:
            item = buffer.pop(uid, None)
        response, status = item.response
        if status != LitAPIStatus.OK:
            return {"error": {"status": 500 if status == LitAPIStatus.ERROR else 504,
                              "message": "the model worker must answer, got an internal error (see the server log)"}}
        return response

    def start_workers(self) -> None:
        """Start LitServe's manager and model worker(s); returns once one is ready."""
        self.app.response_queue_id = 0
        self._manager = self.lit._init_manager(1)
        self.lit.inference_workers = list(self.lit.launch_inference_worker(self.lit_api))
        self.lit.verify_worker_status()

    def stop_workers(self) -> None:
        if self._manager is not None:
            self.lit._perform_graceful_shutdown(self._manager, {}, "normal")
            self._manager = None

    def run(self, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning",
            drain_timeout: float = 30.0) -> None:
        """Serve until SIGINT / SIGTERM, then drain: requests in flight are answered before the worker stops."""
        if self.no_auth:
            print(NO_AUTH_WARNING, file=sys.stderr, flush=True)
        about = (f"{self.info.mode}, {len(self.info.class_names)} classes, model {self.info.model_fingerprint[:12]}")
        run_uvicorn(self.app, host, port, about, start=self.start_workers, stop=self.stop_workers,
                    log_level=log_level, drain_timeout=drain_timeout)


def run_uvicorn(app, host: str, port: int, about: str, *, start=None, stop=None, log_level: str = "warning",
                drain_timeout: float = 30.0) -> None:
    """Serve ``app`` on uvicorn in this (main) thread: bind, ``start()``, serve until SIGINT / SIGTERM, drain the
    requests in flight, ``stop()``.

    uvicorn drains on SIGTERM, then raises SIGTERM again for the handler it found: that one returns once uvicorn
    ran, so ``stop()`` runs and the command ends with status 0 (not killed by the signal); before, it ends the
    start-up.
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=drain_timeout)
    try:
        sock = config.bind_socket()  # before anything starts: a port in use fails at once
    except SystemExit:  # uvicorn logs why and exits
        raise RuntimeError(f"wfkern.serve: port must be free to listen on at {host}, got {port}, which is in use or "
                           "not allowed; choose another --port") from None
    serving = []

    def on_term(sig, frame):
        if not serving:
            raise SystemExit(128 + signal.SIGTERM)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_term) if main_thread else None
    try:
        if start is not None:
            start()
        print(f"wfkern serve: listening on http://{host}:{port} ({about})", file=sys.stderr, flush=True)
        serving.append(True)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        if stop is not None:
            stop()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _check_numbers(max_batch_size, batch_timeout, max_queue, top_k, workers, request_timeout) -> None:
    for name, value, low in (("max_batch_size", max_batch_size, 1), ("max_queue", max_queue, 1),
                             ("top_k", top_k, 1), ("workers", workers, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"wfkern.serve: {name} must be an integer >= {low}, got {value!r}")
    if not 0 <= batch_timeout <= 10:
        raise ValueError(f"wfkern.serve: batch_timeout must be in [0, 10] seconds, got {batch_timeout!r}")
    if not request_timeout > 0:
        raise ValueError(f"wfkern.serve: request_timeout must be > 0 seconds, got {request_timeout!r}")


def build_app(checkpoint: str, gates: str | None = None, **options) -> WFServer:
    """A server for ``checkpoint`` + ``gates``; ``.run(host, port)`` serves it, ``.app`` is its FastAPI app.

    Options: those of ``WFServer`` (registry, no_auth, mode, max_batch_size, batch_timeout, max_queue, limits,
    top_k, threads, device, class_names, workers, request_timeout).
    """
    return WFServer(checkpoint, gates, **options)
