"""The HTTP routes of a replica: POST /predict, POST /documents (BioC JSON), GET /health, GET /model, the OpenAPI docs.

A client's mistake is never a 500: too many texts, too long a text or too large a body is 413, a
body that is not JSON or not `{"texts": [str, ...]}` is 422; both are one line of JSON,
`{"error": "<field>: <what is wrong>"}`. No Ray here: `build_api(server)` takes any object with
`cfg`, `predict(texts)` and `model_info()` (a replica, or a stand-in in the tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..data.documents import Document, Mention
from ..data.formats.bioc_model import from_document, to_document
from ..data.sentences import sentences_of
from ..errors import BionerError, CorpusError, first_line
from ..infer.text import check_text
from .config import NAME_HEADER, VERSION_HEADER, ServeConfig
from .follow import Loaded

REQUEST = Path("request")  # where a document of a request is said to come from, in messages
EXAMPLE = "Germline mutations in BRCA1 cause hereditary breast cancer ."


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"texts": [EXAMPLE]}]})

    texts: list[str] = Field(
        ..., description="Raw texts to tag (at most --max-texts, each at most --max-chars characters)."
    )
    types: list[str] | None = Field(None, description="Entity types to return (default: every type the model knows).")

    @field_validator("types")
    @classmethod
    def _names_a_type(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:  # an empty list would silently return no entities
            raise ValueError("names no type: give at least one, or leave types out for every type")
        return v


class Entity(BaseModel):
    text: str = Field(..., description="the entity as written: texts[i][start:end]")
    start: int = Field(..., description="character offset of its first character")
    end: int = Field(..., description="character offset after its last character")
    type: str = Field(..., description="entity type, one of the model's types")
    score: float = Field(..., description="the model's confidence: the mean probability of the entity's word tags")


class DocumentsRequest(BaseModel):
    """A BioC JSON collection: its documents are answered annotated, the rest of it as it came."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {"documents": [{"id": "1", "passages": [{"offset": 0, "infons": {"type": "title"}, "text": EXAMPLE}]}]}
            ]
        },
    )

    documents: list[dict] = Field(
        ...,
        description="BioC JSON documents (id, passages with offset and text), at most "
        "--max-texts, each at most --max-chars characters in all",
    )


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
    return f"{field_name(e.get('loc', ()))}: {str(e.get('msg', 'invalid')).removeprefix('Value error, ')}{more}"


def is_json(content_type: str | None) -> bool:
    """Whether a Content-Type names JSON (application/json, application/*+json), the only bodies read as JSON."""
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def content_type_message(content_type: str | None) -> str:
    got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
    return f"body: {got}, so the body is not read as JSON; send Content-Type: application/json"


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


def read_documents(objs: list[dict], cfg: ServeConfig) -> tuple[list[Document], tuple[int, str] | None]:
    """The request's BioC JSON documents as Documents, or (HTTP status, one-line reason naming the field)."""
    if len(objs) > cfg.max_texts:
        return [], (413, f"documents: {len(objs)} documents, at most {cfg.max_texts} per request")
    docs = []
    for i, obj in enumerate(objs):
        try:
            doc = to_document(obj, REQUEST, 0, None)
        except CorpusError as e:  # the request is no file: its reason alone
            return [], (422, f"documents.{i}: {e.what}")
        except (BionerError, ValueError, TypeError, KeyError) as e:
            return [], (422, f"documents.{i}: {first_line(e)}")
        size = sum(len(p.text) for p in doc.passages)
        if size > cfg.max_chars:
            return [], (413, f"documents.{i}: {size} characters, at most {cfg.max_chars} per document")
        problem = text_problem([p.text for p in doc.passages])
        if problem:
            return [], (422, f"documents.{i}.passages.{problem.removeprefix('texts.')}")
        docs.append(doc)
    return docs, None


async def tag_in_batches(server: Tagging, texts: list[str], batch: int) -> tuple[list[list[dict]], Loaded | None]:
    """Entities of many texts, sent in groups that each fit one batch of the replica."""
    entities: list[list[dict]] = []
    model = None
    for i in range(0, max(len(texts), 1), batch):
        ents, model = await server.predict(texts[i : i + batch])
        entities += ents
    return entities, model


def version_headers(model: Loaded) -> dict[str, str]:
    return {VERSION_HEADER: str(model.version or ""), NAME_HEADER: model.name}


class BodyLimit:
    """413 for a request body over what the limits allow: at once when its Content-Length says so, else
    (a chunked body) as soon as the bytes read pass the limit, so that no more of it is read."""

    def __init__(self, app, max_bytes: int, max_documents_bytes: int):
        self.app, self.max_bytes, self.max_documents_bytes = app, max_bytes, max_documents_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from starlette.exceptions import HTTPException  # lazy (platform/README.md)
        from starlette.responses import JSONResponse

        size = dict(scope.get("headers") or []).get(b"content-length", b"")
        limit = self.max_documents_bytes if scope.get("path") == "/documents" else self.max_bytes
        if size.isdigit() and int(size) > limit:
            msg = f"body: {int(size)} bytes, at most {limit} (--max-texts x --max-chars)"
            await JSONResponse({"error": msg}, status_code=413)(scope, receive, send)
            return
        read, started = 0, False

        async def bounded_receive():
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:  # an HTTPException: FastAPI hands it on to the app's handler, not as a generic 400
                    raise HTTPException(413, f"body: more than {limit} bytes (--max-texts x --max-chars)")
            return message

        async def watched_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, watched_send)
        except HTTPException as e:  # raised where no handler answers it (the app's handler usually does)
            if started or e.status_code != 413:
                raise
            await JSONResponse({"error": str(e.detail)}, status_code=413)(scope, receive, send)


def build_api(server: Tagging):
    """The FastAPI app a replica serves (Ray Serve's ingress)."""
    from fastapi import FastAPI  # lazy (platform/README.md)

    api = FastAPI(
        title="bioner serve",
        description="Biomedical named entities in raw text, from the model the registry alias names. Every answer of "
        f"/predict names the model version that produced it in the `{VERSION_HEADER}` header.",
    )
    api.add_middleware(
        BodyLimit, max_bytes=server.cfg.max_body_bytes, max_documents_bytes=server.cfg.max_documents_body_bytes
    )
    _error_handlers(api)
    _routes(api, server)
    return api


def _error_handlers(api) -> None:
    from fastapi.exceptions import RequestValidationError  # lazy (platform/README.md)
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse

    async def invalid(request, exc: RequestValidationError):
        content_type = request.headers.get("content-type")
        if not is_json(content_type):  # FastAPI read the body as bytes: the model's complaint would not say why
            return JSONResponse({"error": content_type_message(content_type)}, status_code=422)
        return JSONResponse({"error": validation_message(list(exc.errors()))}, status_code=422)

    async def http_error(_request, exc: HTTPException):
        if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):  # FastAPI's "error parsing the body"
            return JSONResponse({"error": "body: JSON nested too deeply to read"}, status_code=422)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    api.add_exception_handler(RequestValidationError, invalid)
    api.add_exception_handler(HTTPException, http_error)


_ERRORS = {
    413: {"description": 'too many texts, too long a text, or too large a body: {"error": "..."}'},
    422: {
        "description": 'not JSON, or not {"texts": [str, ...]} (/documents: not a BioC JSON collection): '
        '{"error": "<field>: ..."}'
    },
}


def _routes(api, server: Tagging) -> None:
    from starlette.responses import JSONResponse  # lazy (platform/README.md)

    cfg = server.cfg

    @api.post(
        "/predict",
        response_model=list[list[Entity]],
        responses=_ERRORS,
        summary="Tag texts: one list of entities per text, with character offsets",
    )
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
                return JSONResponse(
                    {
                        "error": f"types: {', '.join(unknown)} not known to this model "
                        f"(it knows {', '.join(model.tagger.types)})"
                    },
                    status_code=422,
                )
            entities = [[e for e in ents if e["type"] in body.types] for ents in entities]
        return JSONResponse(entities, headers=version_headers(model))

    _documents_route(api, server)

    @api.get("/health", summary="200 while this replica has a model loaded")
    async def health():
        info = server.model_info()
        return JSONResponse(
            {"status": "ok", "version": info["version"]}, headers={VERSION_HEADER: str(info["version"] or "")}
        )

    @api.get(
        "/model", summary="The model answering (name, version, run id, types, when loaded), its switches and the limits"
    )
    async def model():
        return server.model_info()


def _documents_route(api, server: Tagging) -> None:
    from starlette.responses import JSONResponse  # lazy (platform/README.md)

    cfg = server.cfg

    @api.post(
        "/documents",
        responses=_ERRORS,
        summary="Annotate BioC JSON documents: each passage split into sentences, "
        "the model's mentions added as annotations at document offsets (existing ones replaced)",
    )
    async def documents(body: DocumentsRequest):
        docs, problem = read_documents(body.documents, cfg)
        if problem is not None:
            return JSONResponse({"error": problem[1]}, status_code=problem[0])
        sentences = [(d, s) for d in docs for s in sentences_of(d)]
        texts = [
            d.passages[s.passage].text[s.start - d.passages[s.passage].offset : s.end - d.passages[s.passage].offset]
            for d, s in sentences
        ]
        entities, model = await tag_in_batches(server, texts, cfg.max_batch_texts)
        for d in docs:
            for p in d.passages:
                p.mentions = []
        for (d, s), ents in zip(sentences, entities, strict=True):
            d.passages[s.passage].mentions += [
                Mention(s.start + e["start"], s.start + e["end"], e["text"], e["type"], score=e.get("score"))
                for e in ents
            ]
        from bioc.biocjson import toJSON  # lazy (platform/README.md)

        answer = body.model_dump() | {"documents": [toJSON(from_document(d, xml=False)) for d in docs]}
        return JSONResponse(answer, headers=version_headers(model))
