"""The HTTP routes of a replica: POST /predict, GET /health, GET /model, and the OpenAPI docs.

A client's mistake is never a 500: too many texts, too long a text or too large a body is 413, a
body that is not JSON or not `{"texts": [str, ...]}` is 422; both are one line of JSON,
`{"error": "<field>: <what is wrong>"}`. No Ray here: `build_api(server)` takes any object with
`cfg`, `predict(texts)` and `model_info()` (a replica, or a stand-in in the tests).
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from ..errors import BionerError
from ..infer.text import check_text
from .config import NAME_HEADER, VERSION_HEADER, ServeConfig
from .follow import Loaded

EXAMPLE = "Germline mutations in BRCA1 cause hereditary breast cancer ."


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"texts": [EXAMPLE]}]})

    texts: list[str] = Field(..., description="Raw texts to tag (at most --max-texts, each at most --max-chars characters).")
    types: list[str] | None = Field(None, description="Entity types to return (default: every type the model knows).")


class Entity(BaseModel):
    text: str = Field(..., description="the entity as written: texts[i][start:end]")
    start: int = Field(..., description="character offset of its first character")
    end: int = Field(..., description="character offset after its last character")
    type: str = Field(..., description="entity type, one of the model's types")


class Tagging(Protocol):
    cfg: ServeConfig

    async def predict(self, texts: list[str]) -> tuple[list[list[dict]], Loaded]: ...

    def model_info(self) -> dict: ...


def field_name(loc) -> str:
    """`("body", "texts", 2)` -> `texts.2`; the body itself is `body`."""
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_message(errors: list[dict]) -> str:
    """FastAPI's validation errors as one line naming the first bad field."""
    e = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
    if e.get("type") == "json_invalid":
        return f"body: not valid JSON ({(e.get('ctx') or {}).get('error', 'decode error')})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{field_name(e.get('loc', ()))}: {e.get('msg', 'invalid')}{more}"


def limit_problem(texts: list[str], cfg: ServeConfig) -> str | None:
    """Why these texts exceed the limits (HTTP 413), or None."""
    if len(texts) > cfg.max_texts:
        return f"texts: {len(texts)} texts, at most {cfg.max_texts} per request"
    for i, t in enumerate(texts):
        if len(t) > cfg.max_chars:
            return f"texts.{i}: {len(t)} characters, at most {cfg.max_chars} per text"
    return None


def text_problem(texts: list[str]) -> str | None:
    """Why a text cannot be tagged (HTTP 422), or None: a lone surrogate (`"\\ud800"` in the JSON)."""
    for i, t in enumerate(texts):
        try:
            check_text(t, f"texts.{i}")
        except BionerError as e:
            return str(e)
    return None


def version_headers(model: Loaded) -> dict[str, str]:
    return {VERSION_HEADER: str(model.version or ""), NAME_HEADER: model.name}


class BodyLimit:
    """413 for a request whose declared Content-Length exceeds what the limits allow, before it is read."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            size = dict(scope.get("headers") or []).get(b"content-length", b"")
            if size.isdigit() and int(size) > self.max_bytes:
                from starlette.responses import JSONResponse  # lazy: only replicas import the web stack

                msg = f"body: {int(size)} bytes, at most {self.max_bytes} (--max-texts x --max-chars)"
                await JSONResponse({"error": msg}, status_code=413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_api(server: Tagging):
    """The FastAPI app a replica serves (Ray Serve's ingress)."""
    from fastapi import FastAPI  # lazy: only replicas import the web stack

    api = FastAPI(
        title="bioner serve",
        description="Biomedical named entities in raw text, from the model the registry alias names. Every answer of "
                    f"/predict names the model version that produced it in the `{VERSION_HEADER}` header.",
    )
    api.add_middleware(BodyLimit, max_bytes=server.cfg.max_body_bytes)
    _error_handlers(api)
    _routes(api, server)
    return api


def _error_handlers(api) -> None:
    from fastapi.exceptions import RequestValidationError  # lazy: only replicas import the web stack
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse

    async def invalid(_request, exc: RequestValidationError):
        return JSONResponse({"error": validation_message(list(exc.errors()))}, status_code=422)

    async def http_error(_request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    api.add_exception_handler(RequestValidationError, invalid)
    api.add_exception_handler(HTTPException, http_error)


_ERRORS = {413: {"description": "too many texts, too long a text, or too large a body: {\"error\": \"...\"}"},
           422: {"description": "not JSON, or not {\"texts\": [str, ...]}: {\"error\": \"<field>: ...\"}"}}


def _routes(api, server: Tagging) -> None:
    from starlette.responses import JSONResponse  # lazy: only replicas import the web stack

    cfg = server.cfg

    @api.post("/predict", response_model=list[list[Entity]], responses=_ERRORS,
              summary="Tag texts: one list of entities per text, with character offsets")
    async def predict(body: PredictRequest):
        problem = limit_problem(body.texts, cfg)
        if problem:
            return JSONResponse({"error": problem}, status_code=413)
        problem = text_problem(body.texts)
        if problem:
            return JSONResponse({"error": problem}, status_code=422)
        entities, model = await server.predict(body.texts)
        if body.types is not None:  # the batch tags every type; each request keeps the ones it asked for
            unknown = sorted(set(body.types) - set(model.tagger.types))
            if unknown:
                return JSONResponse({"error": f"types: {', '.join(unknown)} not known to this model "
                                              f"(it knows {', '.join(model.tagger.types)})"}, status_code=422)
            entities = [[e for e in ents if e["type"] in body.types] for ents in entities]
        return JSONResponse(entities, headers=version_headers(model))

    @api.get("/health", summary="200 while this replica has a model loaded")
    async def health():
        info = server.model_info()
        return JSONResponse({"status": "ok", "version": info["version"]}, headers={VERSION_HEADER: str(info["version"] or "")})

    @api.get("/model", summary="The model answering (name, version, run id, types, when loaded), its switches and the limits")
    async def model():
        return server.model_info()
