"""``wfkern serve``: per-request forgetting behind an HTTP server (LitServe), with a per-tenant forget registry.

    server = wfkern.serve.build_app("model.safetensors", "gates.safetensors", registry="registry.db")
    server.run(host="127.0.0.1", port=8000)       # API v1: POST /v1/predict, GET /v1/classes, /healthz, /metrics

Sits at the command line's level: imports patch, models, train and data; only the CLI imports it. Needs the
optional extra ``wfkern[serve]`` (litserve, prometheus-client, pillow).
"""

from wfkern.serve.handler import MODES, ServedModel, load_served
from wfkern.serve.inputs import BadInput, Limits
from wfkern.serve.registry import SQLiteForgetStore
from wfkern.serve.server import NO_AUTH_WARNING, WFServer, build_app

__all__ = ["build_app", "WFServer", "Limits", "load_served", "ServedModel", "MODES", "BadInput", "SQLiteForgetStore",
           "NO_AUTH_WARNING"]
