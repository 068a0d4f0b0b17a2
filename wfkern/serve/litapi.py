"""The LitServe API: decode_request -> batch -> predict -> unbatch -> encode_response, in LitServe's inference worker.

The requests that arrive within one batching window (``max_batch_size``, ``batch_timeout``) reach ``batch`` together
and are answered by ONE forward of the patched model, each image with its own request's forget set.
"""

from __future__ import annotations

import time
from queue import Empty

import litserve as ls
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.loops.simple_loops import BatchedLoop
from litserve.utils import LitAPIStatus, LoopResponseType

from wfkern.serve.handler import Decoded, ServedModel, decode_payload, load_served, predict_batch
from wfkern.serve.inputs import Limits

__all__ = ["WFLitAPI", "WindowLoop"]


class WindowLoop(BatchedLoop):
    """LitServe's batched loop with a window that opens at a batch's first request: the worker blocks while idle
    (LitServe's own loop polls the queue every millisecond), then takes what arrives within ``batch_timeout``."""

    def _take(self, lit_api, item, transport, payloads: list, timed_out: list) -> None:
        if item == _SENTINEL_VALUE:
            raise _StopLoopError()
        queue_id, uid, arrived, x = item
        self.put_response(transport=transport, response_queue_id=queue_id, uid=uid, response_data=(),
                          status=LitAPIStatus.START, response_type=LoopResponseType.REGULAR)
        limit = lit_api.request_timeout
        if limit not in (None, False, -1) and time.monotonic() - arrived > limit:
            timed_out.append((queue_id, uid))
        else:
            payloads.append((queue_id, uid, x))

    def get_batch_requests(self, lit_api, request_queue, transport):
        payloads, timed_out = [], []
        try:
            self._take(lit_api, request_queue.get(timeout=1.0), transport, payloads, timed_out)
        except Empty:
            return payloads, timed_out
        deadline = time.monotonic() + lit_api.batch_timeout
        while len(payloads) + len(timed_out) < lit_api.max_batch_size:
            left = deadline - time.monotonic()
            try:
                item = request_queue.get(timeout=left) if left > 0 else request_queue.get_nowait()
            except Empty:
                break
            self._take(lit_api, item, transport, payloads, timed_out)
        return payloads, timed_out


class WFLitAPI(ls.LitAPI):
    """Serve a checkpoint with its gates; one worker process holds one copy of the model.

    Args:
        checkpoint, gates, mode, class_names: as ``wfkern.serve.load_served``.
        limits: what a request may carry.
        threads: torch CPU threads in the worker (None: torch's choice).
        max_batch_size, batch_timeout: LitServe's batching window.
        api_path: where LitServe would mount the API (the front mounts ``/v1/predict`` itself).
    """

    def __init__(self, checkpoint: str, gates: str | None, *, mode: str = "wf", class_names=None,
                 limits: Limits = Limits(), threads: int | None = None, max_batch_size: int = 16,
                 batch_timeout: float = 0.005, api_path: str = "/v1/_worker") -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=api_path,
                         loop=WindowLoop() if max_batch_size > 1 else "auto")
        self.checkpoint, self.gates, self.mode = checkpoint, gates, mode
        self.class_names, self.limits, self.threads = class_names, limits, threads
        self.served: ServedModel | None = None

    def setup(self, device) -> None:
        import torch

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        device = "cpu" if str(device).startswith("cpu") else device
        self.served = load_served(self.checkpoint, self.gates, mode=self.mode, device=device,
                                  class_names=self.class_names)

    def decode_request(self, request: dict) -> Decoded:
        return decode_payload(request, self.served, self.limits)

    def batch(self, inputs: list[Decoded]) -> list[Decoded]:
        return list(inputs)  # stacked in predict, where the forget rows are built with the images

    def predict(self, x):
        if isinstance(x, Decoded):  # max_batch_size 1: LitServe's unbatched loop hands one request
            return predict_batch([x], self.served)[0]
        return predict_batch(x, self.served)

    def unbatch(self, output: list[dict]) -> list[dict]:
        return list(output)

    def encode_response(self, output: dict) -> dict:
        return output
