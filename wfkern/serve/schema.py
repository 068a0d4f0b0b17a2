"""The JSON of API v1, as pydantic models: what ``/openapi.json`` and ``/docs`` show. The handlers parse requests
themselves (for one-line errors in the project's form) and these models check every answer they send."""

from __future__ import annotations

from typing import Optional, Union

from pydantic import BaseModel, Field

__all__ = ["ImageIn", "PredictRequest", "PredictResponse", "ClassesResponse", "ErrorResponse", "TenantForget",
           "ClassesChange", "TenantCreate", "TenantKey", "TenantOut", "AuditOut", "HealthResponse"]


class ImageIn(BaseModel):
    """One image: exactly one of ``data`` or ``array``."""

    data: Optional[str] = Field(None, description="base64 PNG or JPEG (a data: URL prefix is accepted)")
    array: Optional[list] = Field(None, description="pixels in [0, 1], nested (H, W) or (C, H, W)")


class PredictRequest(BaseModel):
    images: list[Union[ImageIn, str]] = Field(..., description="one or several images (a string is base64 data)")
    forget: Optional[Union[int, str, list[Union[int, str]]]] = Field(
        None, description="classes to forget, by id or name, added to the tenant's forgotten classes")
    top_k: Optional[int] = Field(None, description="classes per image in the answer (default 5)")


class ClassScore(BaseModel):
    class_: int = Field(..., alias="class")
    name: str
    probability: float


class Prediction(BaseModel):
    top_k: list[ClassScore]


class ForgetApplied(BaseModel):
    applied: list[int] = Field(..., description="the forget set every image of the request was answered with")
    names: list[str]
    tenant: list[int] = Field(..., description="of it, the tenant's forgotten classes (registry)")
    request: list[int] = Field(..., description="of it, the classes the request named")


class BatchInfo(BaseModel):
    requests: int = Field(..., description="requests answered by the same forward")
    images: int = Field(..., description="images in that forward")


class PredictResponse(BaseModel):
    api_version: str
    predictions: list[Prediction]
    forget: ForgetApplied
    model_fingerprint: str = Field(..., description="sha256 of the base model's weights")
    gates_fingerprint: Optional[str] = Field(None, description="sha256 of the gates file")
    filters_fingerprint: Optional[str] = Field(None, description="deprecated: the same as gates_fingerprint "
                                               "(its old name; removed in the next release)")
    batch: BatchInfo


class ClassOut(BaseModel):
    id: int
    name: str


class ClassesResponse(BaseModel):
    api_version: str
    num_classes: int
    classes: list[ClassOut]
    mode: str
    model_fingerprint: str
    gates_fingerprint: Optional[str] = None
    filters_fingerprint: Optional[str] = Field(None, description="deprecated: the same as gates_fingerprint")


class HealthResponse(BaseModel):
    status: str


class ErrorBody(BaseModel):
    status: int
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class TenantOut(BaseModel):
    id: int
    name: str
    forgotten: list[int]


class TenantForget(BaseModel):
    tenant: TenantOut
    names: list[str]


class ClassesChange(BaseModel):
    classes: list[Union[int, str]] = Field(..., description="class ids or names")
    reason: Optional[str] = None


class TenantCreate(BaseModel):
    name: str


class TenantKey(BaseModel):
    tenant: TenantOut
    api_key: str = Field(..., description="shown once; only its hash is stored")


class AuditOut(BaseModel):
    seq: int
    at: float
    who: str
    tenant_id: int
    action: str
    classes: list[int]
    reason: Optional[str] = None
