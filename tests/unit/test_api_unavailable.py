"""api_unavailable: which errors mean "the Prefect API did not answer" (retried, reported with a
warning) and which are an answer that says no (permanent)."""

from __future__ import annotations

import httpx
import pytest
from prefect.exceptions import PrefectHTTPStatusError
from prefect.states import Failed

from vaultflow.errors import ConfigError
from vaultflow.tasks.common import api_unavailable, retry_only_transient

REQUEST = httpx.Request("POST", "http://127.0.0.1:4200/api/artifacts/")


def status_error(code: int) -> PrefectHTTPStatusError:
    """The error Prefect's client raises for an HTTP `code` answer (raise_for_status)."""
    response = httpx.Response(code, request=REQUEST, json={"detail": "from the test"})
    return PrefectHTTPStatusError.from_httpx_error(
        httpx.HTTPStatusError(f"HTTP {code}", request=REQUEST, response=response)
    )


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("[Errno 111] Connection refused", request=REQUEST),
        httpx.ReadTimeout("timed out", request=REQUEST),
        httpx.ConnectTimeout("timed out", request=REQUEST),
        httpx.RemoteProtocolError("Server disconnected without sending a response.", request=REQUEST),
        status_error(503),
        status_error(500),
        status_error(429),
    ],
    ids=repr,
)
def test_an_api_that_did_not_answer_is_unavailable_and_retried(error: Exception):
    assert api_unavailable(error)
    assert retry_only_transient(None, None, Failed(data=error))


@pytest.mark.parametrize(
    "error",
    [status_error(404), status_error(422), status_error(401), ValueError("bad value"), ConfigError("no such setting")],
    ids=repr,
)
def test_an_answer_that_says_no_is_permanent_and_not_retried(error: Exception):
    assert not api_unavailable(error)
    assert not retry_only_transient(None, None, Failed(data=error))
