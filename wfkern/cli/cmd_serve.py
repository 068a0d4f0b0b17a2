"""``wfkern serve``: per-request forgetting behind an HTTP server (API v1, docs/serving.md)."""

from __future__ import annotations

import argparse
import os

from wfkern.cli._common import add_gates_arg
from wfkern.cli.errors import UserError

__all__ = ["add_parser", "run"]

ENGINES = ("litserve", "ray")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model with per-request forgetting over HTTP",
                       description="Serve --checkpoint with its --gates: POST /v1/predict classifies images, each "
                                   "request forgetting its tenant's classes (the --registry) and the classes it "
                                   "names; requests arriving within the batching window share one forward. "
                                   "GET /v1/classes, /healthz, /metrics, /docs; a page at /. SIGTERM drains.")
    p.add_argument("--checkpoint", required=True, help="the original model (wfkern train / import / save_model)")
    add_gates_arg(p, "the gates file (wfkern unlearn / wf.save_gates); required unless --mode plain (default: none)",
                  default=None)
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--registry", default=None, metavar="DB",
                      help="the forget registry (an SQLite file from `wfkern registry init`); requests then need "
                           "'Authorization: Bearer <tenant key>' (default: required unless --no-auth)")
    auth.add_argument("--no-auth", action="store_true",
                      help="no keys and no registry, for local experiments only (a loud warning at start-up)")
    p.add_argument("--max-batch-size", type=int, default=16, help="requests that may share one forward")
    p.add_argument("--batch-timeout", type=float, default=0.005,
                   help="seconds the worker waits for more requests to fill a batch")
    p.add_argument("--max-queue", type=int, default=256, help="predict requests in flight before 503 + Retry-After")
    p.add_argument("--max-images", type=int, default=64, help="images per request before 413")
    p.add_argument("--max-side", type=int, default=1024, help="pixels per image side before 413")
    p.add_argument("--max-request-bytes", type=int, default=8 * 1024 * 1024, help="request body bytes before 413")
    p.add_argument("--top-k", type=int, default=5, help="classes per image in an answer unless the request says")
    p.add_argument("--class-names", default=None, metavar="A,B,...",
                   help="one name per class, comma-separated (default: the dataset's names, else 0..Nc-1)")
    p.add_argument("--mode", choices=("wf", "plain", "baked"), default="wf",
                   help="wf: one forward with per-image forget sets; plain: the original model (no forgetting); "
                        "baked: one wfkern.bake model per forgotten class, routed per request")
    p.add_argument("--engine", choices=ENGINES, default="litserve",
                   help="litserve (one process, worker processes) or ray (a Ray Serve deployment)")
    p.add_argument("--replicas", type=int, default=1, help="model workers (litserve) or Ray Serve replicas")
    p.add_argument("--request-timeout", type=float, default=30.0, help="seconds before a request is answered 504")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per worker (default: torch's choice)")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level")
    p.set_defaults(run=run)


def _options(args: argparse.Namespace) -> dict:
    from wfkern.serve import Limits

    for flag in ("max_images", "max_side", "max_request_bytes", "replicas"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}; leave it out for torch's choice")
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in [1, 65535], got {args.port}")
    if args.registry is None and not args.no_auth:
        raise UserError("--registry must be given (an SQLite file from `wfkern registry init --db FILE`), got none; "
                        "or pass --no-auth for local experiments")
    if args.registry is not None and not os.path.isfile(args.registry):
        raise UserError(f"--registry must be an existing registry file (`wfkern registry init --db FILE`), got "
                        f"{args.registry!r}")
    names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
    return dict(registry=args.registry, no_auth=args.no_auth, mode=args.mode, max_batch_size=args.max_batch_size,
                batch_timeout=args.batch_timeout, max_queue=args.max_queue, top_k=args.top_k,
                limits=Limits(args.max_images, args.max_side, args.max_request_bytes), threads=args.threads,
                device=args.device, class_names=names, request_timeout=args.request_timeout)


def run(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.checkpoint):
        raise UserError(f"--checkpoint must be an existing file, got {args.checkpoint!r}")
    options = _options(args)
    if args.engine == "ray":
        from wfkern.serve.ray_engine import run_ray

        return run_ray(args.checkpoint, args.gates, host=args.host, port=args.port, replicas=args.replicas,
                       **options)
    from wfkern.serve import build_app

    server = build_app(args.checkpoint, args.gates, workers=args.replicas, **options)
    server.run(host=args.host, port=args.port, log_level=args.log_level)
    return 0
