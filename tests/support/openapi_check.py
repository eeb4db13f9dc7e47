"""Every answer a test receives, checked against openapi.yaml (openapi-core): its status is documented
for that operation, and its headers and body fit the schema documented for that status.

`SchemaCheckedClient` is a Flask test client that checks each response it returns; a test gets it with
`app.test_client_class = SchemaCheckedClient` (tests/test_api.py's `make_client` does). A path the
document does not name must be a JSON 404, a method it does not list a JSON 405 with `Allow`.
"""

from __future__ import annotations

import functools

from flask.testing import FlaskClient
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_schema_validator import OAS31Validator

import apidoc


def event_validator(name: str) -> OAS31Validator:
    """A JSON Schema validator for the webhook `name`'s request body (the event's whole payload)."""
    pointer = f"#/webhooks/{name}/post/requestBody/content/application~1json/schema"
    # The whole document as the root, so the $refs to components resolve; its other keys are no keywords.
    return OAS31Validator({**apidoc.document(), "$ref": pointer})


class _AnsweredRequest(WerkzeugOpenAPIRequest):
    """The request as openapi-core needs it to find the operation; its body was read by the app
    already (reading it again would wait for bytes that never come)."""

    @property
    def body(self) -> bytes:
        return b""


class AnswerOutsideSchema(AssertionError):
    """An answer the document does not describe."""


@functools.cache
def spec() -> OpenAPI:
    return OpenAPI.from_dict(apidoc.document())


def check_http(method: str, path: str, response) -> None:
    """The same check for an answer from a live bot over HTTP (a `requests` response): the request
    rebuilt as werkzeug sees it (method and path are all the check needs of it)."""
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Response

    request = EnvironBuilder(method=method, path=path).get_request()
    answer = Response(response.content, status=response.status_code, headers=list(response.headers.items()))
    _check(request, answer)


def check_response(response) -> None:
    """Raise AnswerOutsideSchema when a werkzeug test response does not fit its operation's schema."""
    _check(response.request, response)


def _check(request, response) -> None:
    what = f"{request.method} {request.path} -> {response.status_code}"
    try:
        spec().validate_response(_AnsweredRequest(request), WerkzeugOpenAPIResponse(response))
    except PathNotFound:
        _check_plain_error(response, 404, what)
    except OperationNotFound:
        _check_plain_error(response, 405, what)
        if "Allow" not in response.headers:
            raise AnswerOutsideSchema(f"{what}: a 405 names the methods the path takes in Allow") from None
    except Exception as exc:  # openapi-core's validation errors: say which answer and why
        detail = "; ".join(str(e) for e in getattr(exc, "schema_errors", ())) or repr(exc.__cause__ or exc)
        raise AnswerOutsideSchema(f"{what} is outside its schema: {str(exc)[:500]}: {detail[:1000]}\n"
                                  f"body: {response.get_data()[:500]!r}") from exc


def _check_plain_error(response, status: int, what: str) -> None:
    body = response.get_json(silent=True)
    if response.status_code != status or not isinstance(body, dict) or set(body) != {"error", "message"}:
        raise AnswerOutsideSchema(f"{what}: a route the document does not name must be a JSON {status}, "
                                  f"got {response.get_data()[:300]!r}")


class SchemaCheckedClient(FlaskClient):
    """Flask's test client; every response it returns has been checked against openapi.yaml."""

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        check_response(response)
        return response
