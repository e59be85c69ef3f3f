"""What every /v1 route goes through first: credentials, the body cap, errors in OpenAI's shape.

:func:`route_class` makes the ``APIRoute`` class the /v1 router builds its routes with. Its
handler wrapper checks the API key (as Bearer) or a page login (as HTTP Basic), puts who calls
on ``request.state.user`` (a login's user name, :data:`API_KEY_USER`, or the local owner when
the server has no credentials), refuses a body over the cap by its Content-Length, and turns
any error into OpenAI's error JSON. Nothing here touches the app-wide handlers, so the Gradio
page mounted beside these routes keeps its own behaviour.
"""

from __future__ import annotations

import hmac

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from api.errors import ApiError, from_exception
from assistant.settings import MB
from assistant.store import LOCAL_OWNER
from web.logins import Logins, TooManyAttempts

# Who calls with the API key (a login's user name cannot contain a colon).
API_KEY_USER = ":api-key"


def route_class(api_key: str | None, max_body_bytes: int, logins: Logins | None = None) -> type[APIRoute]:
    """Routes that check credentials first (the API key as Bearer, or a page login as HTTP Basic)
    and turn every error into OpenAI's error JSON."""
    expected = api_key.encode() if api_key else None
    challenge = 'Basic realm="assistant", charset="UTF-8"' if logins else "Bearer"
    if logins and expected is not None:
        wanted = "send 'Authorization: Bearer <key>' or a page login as HTTP Basic"
    elif logins:
        wanted = "send a page login as HTTP Basic ('Authorization: Basic <base64 of user:password>')"
    else:
        wanted = "send 'Authorization: Bearer <key>'"

    def authenticate(request: Request) -> str:
        """Who calls: a page login's user name, or API_KEY_USER for the API key."""
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if expected is not None and scheme.lower() == "bearer":
            if hmac.compare_digest(given.strip().encode(), expected):
                return API_KEY_USER
        elif logins and scheme.lower() == "basic":
            client = request.client.host if request.client else "?"
            try:
                user = logins.check_basic(client, header)
                if user is not None:
                    return user
            except TooManyAttempts as exc:
                raise ApiError(
                    429, str(exc), code="rate_limit_exceeded", headers={"Retry-After": str(exc.retry_after_s)}
                ) from None
        what = "API key" if not logins else "credentials"
        raise ApiError(401, f"missing or wrong {what}: {wanted}", code="invalid_api_key")

    def check_length(request: Request) -> None:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_body_bytes:
            raise ApiError(
                413, f"the request body is larger than {max_body_bytes // MB} MB", code="request_too_large"
            )

    class OpenAIRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def guarded(request: Request):
                try:
                    request.state.user = LOCAL_OWNER
                    if expected is not None or logins:
                        request.state.user = authenticate(request)
                    check_length(request)
                    return await handler(request)
                except HTTPException as exc:
                    return ApiError(exc.status_code, str(exc.detail)).response()
                except Exception as exc:
                    error = from_exception(exc)
                    return error.response({"WWW-Authenticate": challenge} if error.status == 401 else None)

            return guarded

    return OpenAIRoute


__all__ = ["API_KEY_USER", "route_class"]
