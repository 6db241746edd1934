"""`inflamrx serve`: MLflow's own scoring app, run by uvicorn, behind a privacy wrapper.

The app is the one ``mlflow models serve`` runs (``mlflow.pyfunc.scoring_server.init`` on the
model loaded by ``load_model_with_mlflow_config``, as its ``app.py`` does); uvicorn runs it
with MLflow's ``--workers`` semantics and its request timeout
(``MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT``). ``PrivateAnswers`` wraps it, for three things
MLflow's server does that a clinical service must not:

- A 4xx body quotes the request: ``Failed to predict data '<DataFrame repr>'`` before the
  model's message, the whole body for invalid JSON, a stack trace with server paths for a CSV
  that pandas cannot read. The wrapper answers the model's own safe message (the field
  ``pyfunc.SAFE_FIELD``) or, for MLflow's messages and models of earlier releases, a short
  message of its own naming only what is safe (column names, row numbers); never a trace.
- A POST without a Content-Type is a 500 in MLflow: here a 415 naming the types accepted.
- No body size limit: here a 413 above ``max_body`` bytes, before anything is parsed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel, scoring_server

from inflamrx.serving.deploy import MODEL_PATH_ENV
from inflamrx.serving.pyfunc import SAFE_FIELD, ResponseModel

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger(__name__)
MAX_BODY_ENV = "INFLAMRX_SERVE_MAX_BODY"
MAX_BODY = 32 * 1024 * 1024  # bytes: 10,000 full records (pyfunc.MAX_ROWS) fit in about 10 MB
CONTENT_TYPES = ("application/json", "text/csv")
_ROW = re.compile(r"^row (\d+)\b", re.MULTILINE)
_NAMES = re.compile(r"\[((?:'[A-Za-z0-9_]{1,60}',? ?)+)\]")
_COLUMN = re.compile(r"(?:for column|convert column) '?([A-Za-z0-9_]{1,60})'?")


def create_app() -> ASGIApp:
    """The uvicorn app factory: one model per worker process, loaded the way MLflow does."""
    path = os.environ[MODEL_PATH_ENV]
    model = contract_checked(scoring_server.load_model_with_mlflow_config(path))
    max_body = int(os.environ.get(MAX_BODY_ENV, MAX_BODY))
    return PrivateAnswers(scoring_server.init(model), max_body)


def contract_checked(model: PyFuncModel) -> PyFuncModel:
    """An inflamrx model with the data contract as its only input check.

    Models logged before this release declare a typed MLflow input schema, whose enforcement
    runs before the contract: it drops unknown columns (a misspelled ``il6`` scored without
    IL-6) and cannot read CSV bodies. The contract checks all the schema did, so the schema is
    set aside in memory (the stored model is untouched); other models keep theirs."""
    try:
        inner = model.unwrap_python_model()
    except MlflowException:  # not a python_model pyfunc
        return model
    signature = model.metadata.signature
    if isinstance(inner, ResponseModel) and signature is not None:
        signature.inputs = None
    return model


def _answer(status: int, message: str, code: str = "BAD_REQUEST") -> tuple[int, bytes]:
    return status, json.dumps({"error_code": code, "message": message}).encode()


def safe_answer(status: int, body: bytes) -> tuple[int, bytes]:
    """What to answer instead of MLflow's error ``body``: the model's safe message, or a short
    message of ours that quotes nothing from the request but column names and row numbers."""
    if status >= 500 and status != 504:
        return _answer(status, "internal error while scoring; the server log has the details",
                       "INTERNAL_ERROR")  # fmt: skip
    try:
        error = json.loads(body)
    except ValueError:
        error = None
    if not isinstance(error, dict):
        if status == 504:
            return _answer(504, "the request took longer than the server's timeout", "TIMEOUT")
        return _answer(status, f"the request was refused (HTTP {status})")
    if status == 405:
        return _answer(405, "send the records with POST", "METHOD_NOT_ALLOWED")
    if isinstance(error.get(SAFE_FIELD), str):
        return _answer(status, error[SAFE_FIELD], str(error.get("error_code", "BAD_REQUEST")))
    return _answer(status, _mlflow_reason(str(error.get("message", ""))))


def _mlflow_reason(message: str) -> str:
    """MLflow's own refusals, and those of models logged by inflamrx 0.1.0, reworded."""
    if "valid JSON formatted string" in message or "valid UTF-8" in message:
        return "the body is not valid JSON (UTF-8)"
    if scoring_server.REQUIRED_INPUT_FORMAT in message:
        return (
            "the JSON body must be an object with one of dataframe_split or dataframe_records "
            "(and optionally params)"
        )
    if "Failed to parse input as a Pandas DataFrame" in message:
        return "the body could not be read as a table (CSV with a header line, or JSON)"
    if "records break the data contract" in message:  # an older model's own message
        counts = re.search(r"(\d+) of (\d+) records break", message)
        rows = sorted({int(r) for r in _ROW.findall(message)})
        what = f"{counts.group(1)} of {counts.group(2)} records" if counts else "records"
        return (
            f"{what} break the data contract (rows {rows[:20]}); nothing was scored. This "
            "model's messages quote patient values, so the reasons are not returned: register "
            "the model again with this inflamrx version for per-row reasons"
        )
    if "missing inputs" in message and (names := _NAMES.search(message)):
        return f"required columns are missing: [{names.group(1)}]"
    if "schema" in message and (column := _COLUMN.search(message)):
        return f"column {column.group(1)}: a value does not have the column's type (not shown)"
    if "params.top_factors must be" in message:  # the value sent follows ". Got"
        return message[message.find("params.top_factors") :].split(". Got")[0]
    if "param" in message.lower():
        return "params: a value does not have the declared type (top_factors: a whole number)"
    return "the request was refused; the reason may quote the request, so it is not returned"


def _media_type(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, int | None]:
    content_type = length = None
    for key, value in headers:
        if key == b"content-type":
            content_type = value.decode("latin-1")
        elif key == b"content-length" and value.isdigit():
            length = int(value)
    return content_type, length


def _acceptable(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime, *parameters = (part.strip().lower() for part in content_type.split(";"))
    return mime in CONTENT_TYPES and all(p in ("charset=utf-8", "") for p in parameters)


class PrivateAnswers:
    """ASGI middleware around MLflow's scoring app (see the module docstring)."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/invocations":
            await self.app(scope, receive, send)
            return
        content_type, length = _media_type(scope["headers"])
        if scope["method"] == "POST" and not _acceptable(content_type):
            types = " or ".join(CONTENT_TYPES)
            await _respond(send, *_answer(415, f"send Content-Type {types} (UTF-8)"))
            return
        if length is not None and length > self.max_body:
            await _respond(send, *self._too_large())
            return
        body = bytearray()
        more = True
        while more:  # read it all first: a chunked body has no Content-Length to check
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await _respond(send, *self._too_large())
                return
        await self._scored(scope, bytes(body), receive, send)

    def _too_large(self) -> tuple[int, bytes]:
        return _answer(
            413,
            f"the body is larger than {self.max_body} bytes; send fewer records per request, "
            "or score a file with `inflamrx predict`",
        )

    async def _scored(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:  # the body was replayed: what comes next (a disconnect) is the client's
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        start: Message | None = None
        held = bytearray()

        async def guarded(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                if message["status"] < 400:
                    await send(message)
                else:
                    start = message  # held until its body is rewritten
                return
            if start is None:
                await send(message)
                return
            held.extend(message.get("body", b""))
            if not message.get("more_body", False):
                status, safe = safe_answer(start["status"], bytes(held))
                if status >= 500:
                    _log.error("HTTP %s while scoring", start["status"])
                await _respond(send, status, safe)

        await self.app(scope, replay, guarded)


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
