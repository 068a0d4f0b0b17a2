"""The HTTP API v1 in front of the model worker: authentication, the tenant's forget registry, request checks,
the queue bound, metrics, and the answers' JSON. Every error is ``{"error": {"status", "message"}}`` with a
one-line message; nothing here runs the model (``submit`` hands a checked payload to the worker).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from wfkern.serve import schema
from wfkern.serve.inputs import BadInput, Limits, resolve_forget
from wfkern.serve.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from wfkern.serve.registry import ForgetStore, Tenant

__all__ = ["ServerInfo", "Front", "ApiError", "API_VERSION"]

API_VERSION = "v1"
ADMIN_API = "admin-api"  # the audit log's "who" for changes made through the admin endpoints
log = logging.getLogger("wfkern.serve")


class ApiError(Exception):
    """An answer other than 200: status, one-line message, extra headers."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass(frozen=True)
class ServerInfo:
    """What the front tells about the model (the worker holds the model itself)."""

    class_names: list
    mode: str
    model_fingerprint: str
    gates_fingerprint: str | None


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status, headers=headers)


_ERRORS = {code: {"model": schema.ErrorResponse} for code in (400, 401, 403, 413, 422, 503, 504)}
_PREDICT_KEYS = ("images", "forget", "top_k")


class Front:
    """The routes of API v1, mounted on a FastAPI app by ``install``.

    Args:
        info: model facts.  submit: hands a checked payload to the model worker, returns its answer.
        store: the forget registry (None with ``no_auth``).  no_auth: no keys; only the request's own forget set.
        limits: request limits.  max_queue: predict requests in flight before 503.
        ready: whether the model worker is up (for /healthz).  request_timeout: seconds before 504.
    """

    def __init__(self, info: ServerInfo, submit: Callable[[dict], Awaitable[dict]], *, store: ForgetStore | None,
                 no_auth: bool, limits: Limits = Limits(), max_queue: int = 256, top_k: int = 5,
                 ready: Callable[[], bool] = lambda: True, request_timeout: float = 30.0) -> None:
        if store is None and not no_auth:
            raise ValueError("wfkern.serve: registry must be given unless no_auth, got none; create one with "
                             "`wfkern registry init --db FILE`, or pass --no-auth for local experiments")
        self.info, self.submit, self.store, self.no_auth = info, submit, store, no_auth
        self.limits, self.max_queue, self.top_k, self.ready = limits, max_queue, top_k, ready
        self.request_timeout = request_timeout
        self.metrics = ServerMetrics()
        self.in_flight = 0
        self.names = list(info.class_names)

    # -- checks ---------------------------------------------------------------------------------------------------

    @staticmethod
    def _bearer(request: Request) -> str:
        header = request.headers.get("authorization")
        if not header:
            raise ApiError(401, "Authorization must be 'Bearer <API key>', got no Authorization header",
                           {"WWW-Authenticate": "Bearer"})
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, f"Authorization must be 'Bearer <API key>', got a {scheme[:20]!r} header",
                           {"WWW-Authenticate": "Bearer"})
        return key.strip()

    def _tenant(self, request: Request) -> Tenant | None:
        if self.no_auth:
            return None
        tenant = self.store.authenticate(self._bearer(request))
        if tenant is None:
            raise ApiError(403, "Authorization must carry a valid API key, got a key that matches no tenant")
        return tenant

    def _admin(self, request: Request) -> None:
        if self.store is None:
            raise ApiError(403, "admin endpoints must have a registry, got a server started with --no-auth")
        if not self.store.is_admin(self._bearer(request)):
            raise ApiError(403, "Authorization must carry the admin key, got another key")

    async def _json(self, request: Request) -> dict:
        length = request.headers.get("content-length")
        limit = self.limits.max_request_bytes
        if length is not None and length.isdigit() and int(length) > limit:
            raise ApiError(413, f"the request body must be at most {limit} bytes, got {length}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the request body must be at most {limit} bytes, got more")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ApiError(400, f"the request body must be JSON, got text that does not parse ({e})") from None
        if not isinstance(body, dict):
            raise ApiError(400, f"the request body must be a JSON object, got a JSON {type(body).__name__}")
        return body

    def _classes(self, value) -> list[int]:
        try:
            return resolve_forget(value, self.names)
        except BadInput as e:
            raise ApiError(e.status, str(e).replace("forget must", "classes must", 1)) from None

    def _payload(self, body: dict, tenant: Tenant | None) -> tuple[dict, list[int], list[int]]:
        unknown = sorted(set(body) - set(_PREDICT_KEYS))
        if unknown:
            raise ApiError(400, f"the request body must have only the keys {', '.join(_PREDICT_KEYS)}, got "
                                f"{', '.join(map(repr, unknown))}")
        images = body.get("images")
        if not isinstance(images, list) or not images:
            raise ApiError(400, f"images must be a non-empty list, got {type(images).__name__ if images != [] else '[]'}")
        if len(images) > self.limits.max_images:
            raise ApiError(413, f"images must hold at most {self.limits.max_images} images a request, got "
                                f"{len(images)}; split the request")
        top_k = body.get("top_k", None)
        top_k = min(self.top_k, len(self.names)) if top_k is None else top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= len(self.names):
            raise ApiError(400, f"top_k must be an integer in [1, {len(self.names)}], got {top_k!r}")
        try:
            asked = resolve_forget(body.get("forget"), self.names)
        except BadInput as e:
            raise ApiError(e.status, str(e)) from None
        held = self.store.forgotten(tenant.id) if tenant is not None else []
        foreign = [c for c in held if c >= len(self.names)]
        if foreign:  # written without --num-classes for another model: never applied as "forget nothing"
            raise ApiError(500, f"the tenant's registry entries must be classes of this model ([0, {len(self.names)})),"
                                f" got {', '.join(map(str, foreign))}; remove them with `wfkern registry unforget`")
        applied = sorted(set(held) | set(asked))
        return {"images": images, "forget": applied, "top_k": top_k}, held, asked

    # -- predict ----------------------------------------------------------------------------------------------------

    async def predict(self, request: Request) -> dict:
        start = time.perf_counter()
        tenant = self._tenant(request)
        payload, held, asked = self._payload(await self._json(request), tenant)
        if self.in_flight >= self.max_queue:
            raise ApiError(503, f"the queue must have room, got {self.in_flight} requests waiting (the limit); "
                                "retry after a second", {"Retry-After": "1"})
        self.in_flight += 1
        self.metrics.queue_depth.set(self.in_flight)
        try:
            out = await asyncio.wait_for(self.submit(payload), self.request_timeout)
        except asyncio.TimeoutError:
            raise ApiError(504, f"the model must answer within {self.request_timeout:g} s, got no answer") from None
        finally:
            self.in_flight -= 1
            self.metrics.queue_depth.set(self.in_flight)
        if "error" in out:
            raise ApiError(out["error"]["status"], out["error"]["message"])
        self.metrics.observe_batch(out["batch"])
        self.metrics.latency.labels("/v1/predict").observe(time.perf_counter() - start)
        applied = payload["forget"]
        return {"api_version": API_VERSION, "predictions": out["predictions"],
                "forget": {"applied": applied, "names": [self.names[c] for c in applied], "tenant": held,
                           "request": asked},
                "model_fingerprint": self.info.model_fingerprint, "gates_fingerprint": self.info.gates_fingerprint,
                "filters_fingerprint": self.info.gates_fingerprint,
                "batch": {"requests": out["batch"]["requests"], "images": out["batch"]["images"]}}

    # -- the app ------------------------------------------------------------------------------------------------------

    def install(self, app: FastAPI) -> FastAPI:
        """Mount every route of API v1 (and the page at /) on ``app``."""
        app.title, app.version = "wfkern serve", API_VERSION
        app.description = "Per-request class forgetting with a weight-filtered (WF-Net) classifier."
        self._handlers(app)
        self._routes(app)
        self._admin_routes(app)
        app.openapi = lambda: self._openapi(app)
        metrics = self.metrics

        inner = app.build_middleware_stack

        def counted():  # counts every answer by route and status (outermost: sees the error handlers' answers)
            stack = inner()

            async def asgi(scope, receive, send):
                if scope["type"] != "http":
                    return await stack(scope, receive, send)
                route = scope.get("path", "")
                route = route if route in _KNOWN else "/v1/admin/..." if route.startswith("/v1/admin/") else "other"

                async def sending(message):
                    if message["type"] == "http.response.start":
                        metrics.requests.labels(route, str(message["status"])).inc()
                    await send(message)

                await stack(scope, receive, sending)

            return asgi

        app.build_middleware_stack = counted
        return app

    def _handlers(self, app: FastAPI) -> None:
        @app.exception_handler(ApiError)
        async def api_error(request: Request, e: ApiError):
            return _error(e.status, e.message, e.headers)

        @app.exception_handler(StarletteHTTPException)
        async def http_error(request: Request, e: StarletteHTTPException):
            return _error(e.status_code, str(e.detail), getattr(e, "headers", None))

        @app.exception_handler(RequestValidationError)
        async def invalid(request: Request, e: RequestValidationError):
            first = e.errors()[0] if e.errors() else {"loc": ("body",), "msg": "invalid"}
            where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "the request body"
            return _error(400, f"{where} must be valid: {first.get('msg')}")

    def _routes(self, app: FastAPI) -> None:
        from wfkern.serve.page import PAGE

        @app.post("/v1/predict", response_model=schema.PredictResponse, responses=_ERRORS,
                  openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                      "schema": {"$ref": "#/components/schemas/PredictRequest"}}}}},
                  summary="Classify images, forgetting the tenant's classes and the request's")
        async def predict(request: Request):
            return await self.predict(request)

        @app.get("/v1/classes", response_model=schema.ClassesResponse, summary="The model's classes")
        async def classes():
            return {"api_version": API_VERSION, "num_classes": len(self.names), "mode": self.info.mode,
                    "classes": [{"id": i, "name": n} for i, n in enumerate(self.names)],
                    "model_fingerprint": self.info.model_fingerprint,
                    "gates_fingerprint": self.info.gates_fingerprint,
                    "filters_fingerprint": self.info.gates_fingerprint}

        @app.get("/v1/forget", response_model=schema.TenantForget, responses=_ERRORS,
                 summary="The calling tenant's forgotten classes (its own entries only)")
        async def own_forget(request: Request):
            tenant = self._tenant(request)
            if tenant is None:
                raise ApiError(403, "/v1/forget must be called with a tenant key, got a server started with "
                                    "--no-auth (no registry)")
            held = self.store.forgotten(tenant.id)
            return {"tenant": {"id": tenant.id, "name": tenant.name, "forgotten": held},
                    "names": [self.names[c] for c in held if c < len(self.names)]}

        @app.get("/v1/forget/audit", response_model=list[schema.AuditOut], responses=_ERRORS,
                 summary="The audit log of the calling tenant's registry entries")
        async def own_audit(request: Request):
            tenant = self._tenant(request)
            if tenant is None:
                raise ApiError(403, "/v1/forget/audit must be called with a tenant key, got a server started with "
                                    "--no-auth (no registry)")
            return [e.to_dict() for e in self.store.audit(tenant.id)]

        @app.get("/healthz", response_model=schema.HealthResponse, responses={503: {"model": schema.ErrorResponse}},
                 summary="200 once the model worker is up")
        async def healthz():
            if not self.ready():
                raise ApiError(503, "the model worker must be running, got none ready")
            return {"status": "ok"}

        @app.get("/metrics", response_class=Response, summary="Prometheus metrics (text format)")
        async def metrics():
            return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)

        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def page():
            return HTMLResponse(PAGE)

    def _tenant_out(self, tenant: Tenant) -> dict:
        return {"id": tenant.id, "name": tenant.name, "forgotten": self.store.forgotten(tenant.id)}

    def _existing(self, tenant_id: int) -> Tenant:
        tenant = self.store.tenant(tenant_id)
        if tenant is None:
            raise ApiError(404, f"tenant must be an existing tenant id, got {tenant_id}")
        return tenant

    def _admin_routes(self, app: FastAPI) -> None:
        store = lambda: self.store  # noqa: E731 - None with --no-auth; _admin refuses first

        @app.post("/v1/admin/tenants", response_model=schema.TenantKey, responses=_ERRORS, summary="Create a tenant")
        async def create(request: Request, body: schema.TenantCreate):
            self._admin(request)
            try:
                tenant, key = store().create_tenant(body.name, who=ADMIN_API)
            except ValueError as e:
                raise ApiError(409, str(e)) from None
            return {"tenant": self._tenant_out(tenant), "api_key": key}

        @app.get("/v1/admin/tenants", response_model=list[schema.TenantOut], responses=_ERRORS,
                 summary="Every tenant and its forgotten classes")
        async def tenants(request: Request):
            self._admin(request)
            return [self._tenant_out(t) for t in store().tenants()]

        @app.post("/v1/admin/tenants/{tenant_id}/rotate-key", response_model=schema.TenantKey, responses=_ERRORS,
                  summary="A new API key for the tenant (the old one stops working)")
        async def rotate(request: Request, tenant_id: int):
            self._admin(request)
            tenant = self._existing(tenant_id)
            key = store().rotate_key(tenant.id, who=ADMIN_API)
            return {"tenant": self._tenant_out(tenant), "api_key": key}

        async def change(request: Request, tenant_id: int, body: schema.ClassesChange, add: bool):
            self._admin(request)
            tenant = self._existing(tenant_id)
            classes = self._classes(body.classes)
            if not classes:
                raise ApiError(400, "classes must name at least one class, got none")
            (store().add_classes if add else store().remove_classes)(tenant.id, classes, who=ADMIN_API,
                                                                     reason=body.reason)
            return self._tenant_out(tenant)

        @app.post("/v1/admin/tenants/{tenant_id}/forget", response_model=schema.TenantOut, responses=_ERRORS,
                  summary="Add classes to the tenant's forgotten classes")
        async def forget(request: Request, tenant_id: int, body: schema.ClassesChange):
            return await change(request, tenant_id, body, True)

        @app.post("/v1/admin/tenants/{tenant_id}/unforget", response_model=schema.TenantOut, responses=_ERRORS,
                  summary="Remove classes from the tenant's forgotten classes")
        async def unforget(request: Request, tenant_id: int, body: schema.ClassesChange):
            return await change(request, tenant_id, body, False)

        @app.get("/v1/admin/tenants/{tenant_id}/audit", response_model=list[schema.AuditOut], responses=_ERRORS,
                 summary="The tenant's audit log")
        async def audit(request: Request, tenant_id: int):
            self._admin(request)
            return [e.to_dict() for e in store().audit(self._existing(tenant_id).id)]

    def _openapi(self, app: FastAPI) -> dict:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            body = schema.PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            parts = spec.setdefault("components", {}).setdefault("schemas", {})
            parts.update(body.pop("$defs", {}))
            parts["PredictRequest"] = body
            app.openapi_schema = spec
        return app.openapi_schema


_KNOWN = {"/v1/predict", "/v1/classes", "/v1/forget", "/v1/forget/audit", "/healthz", "/metrics", "/",
          "/v1/admin/tenants", "/docs", "/openapi.json"}
