"""SGLang's OpenAI endpoints called in process: a batch line's url and body in, the status code
and JSON body that `POST url` on the HTTP server would have answered out.

No re-implementation: the serving objects are SGLang's own (compat.openai_routes), so chat
templates, sampling-parameter mapping, usage and error bodies are the server's. What the HTTP
layer adds is reproduced here, in the same order:

    body --(request model: pydantic)--> 400 {"object": "error", ...}, as the server's
                                         validation handler answers (type "Bad Request")
         --handler.handle_request(request, raw_request=None)-->
               a response model  -> 200, its model_dump_json(by_alias=True)  (model_json_response)
               an error response -> its status code and JSON body

raw_request=None is how SGLang's own Engine calls the tokenizer manager: no HTTP headers, no
client to watch for disconnects.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from pipemax_sglang.sglang import compat

logger = logging.getLogger(__name__)


class Answer(NamedTuple):
    status_code: int
    body: dict[str, Any]


def error_body(status: HTTPStatus, message: str, err_type: str | None = None) -> dict[str, Any]:
    """SGLang's ErrorResponse shape (entrypoints/openai/protocol.py)."""
    return {"object": "error", "message": message, "type": err_type or status.phrase, "param": None,
            "code": status.value}


class OpenAIEndpoints:
    def __init__(self, engine) -> None:
        self._routes = compat.openai_routes(engine)

    async def answer(self, url: str, body: dict[str, Any]) -> Answer:
        handler, request_model = self._routes[url]
        try:
            request = request_model.model_validate(body)
        except ValidationError as e:
            return Answer(HTTPStatus.BAD_REQUEST.value, error_body(HTTPStatus.BAD_REQUEST, str(e)))
        try:
            response = await handler.handle_request(request, None)
        except Exception as e:   # handle_request answers its own errors; this is a last resort
            logger.exception("batch request failed")
            return Answer(500, error_body(HTTPStatus.INTERNAL_SERVER_ERROR, f"Internal server error: {e}",
                                          "InternalServerError"))
        return _as_answer(response)


def _as_answer(response: Any) -> Answer:
    if isinstance(response, BaseModel):
        return Answer(200, json.loads(response.model_dump_json(by_alias=True)))
    status = getattr(response, "status_code", None)
    content = getattr(response, "body", None)
    if isinstance(status, int) and isinstance(content, (bytes, bytearray)):
        return Answer(status, json.loads(content))
    return Answer(500, error_body(HTTPStatus.INTERNAL_SERVER_ERROR,
                                  f"unexpected response type {type(response).__name__}", "InternalServerError"))
