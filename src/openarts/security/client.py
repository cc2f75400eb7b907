"""Client side: an httpx `Auth` that signs each request with SDK-HMAC-SHA256, as the official SDK
does, plus a random signed `X-Openarts-Nonce` so that two identical requests in the same second
are not taken for a replay (the SDK has no nonce: two identical writes in one second, or two
identical reads against a server with replay_protection = "strict", would share a signature)."""

from __future__ import annotations

import uuid
from collections.abc import Generator

import httpx

from openarts.security.signer import sign


class SdkHmacAuth(httpx.Auth):
    requires_request_body = True

    def __init__(self, access_key: str, secret_key: str, project_id: str | None = None, nonce: bool = True) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.project_id = project_id
        self.nonce = nonce

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.project_id:
            request.headers["X-Project-Id"] = self.project_id
        if self.nonce:
            request.headers["X-Openarts-Nonce"] = uuid.uuid4().hex
        request.headers.update(sign(request.method, str(request.url), dict(request.headers), request.content,
                                    self.access_key, self.secret_key))
        yield request
