"""The verifier against the official SDK's own Signer: for any method, path, query, headers and body
the SDK can produce, openarts computes the very signature the SDK sent (property-based), and any
change to what is signed changes it."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openarts.security import signer
from openarts.security.replay import ReplayCache

AK, SK = "TESTAK0000000000", "TESTSK0000000000000000000000000000000000"
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF, blacklist_characters="\x7f"),
                      max_size=20)


def sdk_sign(method: str, segments: list[str], query: list[tuple[str, Any]], headers: dict[str, str],
             body: bytes) -> tuple[str, str, dict[str, str], SdkRequest]:
    """What the SDK puts on the wire: raw path, raw query, headers (as the server decodes them)."""
    resource_path = "/v2/proj/" + "/".join(quote(s, safe="") for s in segments)
    req = SdkRequest(method=method, schema="http", host="127.0.0.1:8080", resource_path=resource_path, uri="",
                     query_params=list(query), header_params=dict(headers), body=body or "")
    Signer(BasicCredentials(AK, SK)).sign(req)
    wire = {k.lower(): str(v).encode("iso-8859-1").decode("utf-8") for k, v in req.header_params.items()}
    query_string = req.uri.split("?", 1)[1] if "?" in req.uri else ""
    return resource_path, query_string, wire, req


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
       segments=st.lists(text, min_size=0, max_size=4),
       query=st.lists(st.tuples(text, st.one_of(text, st.integers(-5, 10**6), st.booleans())), max_size=4),
       extra=st.dictionaries(st.from_regex(r"X-[A-Za-z][A-Za-z0-9-]{0,10}", fullmatch=True), header_text, max_size=3),
       body=st.binary(max_size=64), content_type=st.sampled_from(
           ["application/json", "application/json;charset=utf-8", "text/plain", "application/octet-stream"]))
def test_openarts_verifies_every_sdk_signature(method: str, segments: list[str], query: list[tuple[str, Any]],
                                               extra: dict[str, str], body: bytes, content_type: str) -> None:
    by_key: dict[str, Any] = {}
    for k, v in query:  # the SDK sends one value per key (lists aside); its sort compares the raw values
        by_key.setdefault(k, v)
    headers = {"Content-Type": content_type, "User-Agent": "huaweicloud-usdk-python/3.0; app/é-ü",
               "X-Project-Id": "proj", **extra}
    raw_path, raw_query, wire, _ = sdk_sign(method, segments, list(by_key.items()), headers, body)
    auth = signer.parse_authorization(wire["authorization"])
    assert auth is not None and auth.access_key == AK
    want = signer.expected_signature(SK, method, raw_path, raw_query, {h: wire[h] for h in auth.signed_headers},
                                     auth.signed_headers, body)
    assert want == auth.signature
    if body:  # any change to the body is caught (unless the SDK declared UNSIGNED-PAYLOAD)
        changed = signer.expected_signature(SK, method, raw_path, raw_query,
                                            {h: wire[h] for h in auth.signed_headers}, auth.signed_headers,
                                            body + b" ")
        assert (changed == want) == (wire.get("x-sdk-content-sha256") == "UNSIGNED-PAYLOAD")


def test_the_reference_examples() -> None:
    # the reference (§3): %2F inside a segment is a separator; a trailing '/' is always appended
    uri = signer.canonical_uri("/v2/p/training-jobs/j%201/logs/worker%2F0")
    assert uri == "/v2/p/training-jobs/j%201/logs/worker/0/"
    assert signer.canonical_uri("/v2/p/training-jobs/") == "/v2/p/training-jobs/"
    assert signer.canonical_query("pattern=a%20b%2Bc%2Fd~%C3%A9&x=y&a=") == "a=&pattern=a%20b%2Bc%2Fd~%C3%A9&x=y"
    assert signer.payload_hash(b"", {}) == hashlib.sha256(b"").hexdigest() == signer.EMPTY_HASH
    assert signer.parse_date("20261128T002108Z") is not None
    assert signer.parse_date("2026-11-28T00:21:08Z") is None and signer.parse_date("20261328T002108Z") is None
    assert signer.parse_authorization("SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;X-Bad, Signature=ab") is None


def test_our_client_signer_matches_the_sdk() -> None:
    headers = {"Content-Type": "application/json", "X-Project-Id": "proj", "X-Sdk-Date": "20261128T002108Z",
               "User-Agent": "ua"}
    body = b'{"kind": "job"}'
    _, _, wire, _ = sdk_sign("POST", ["training-jobs"], [("b", "2"), ("a", "1")], headers, body)
    ours = signer.sign("POST", "http://127.0.0.1:8080/v2/proj/training-jobs?a=1&b=2", headers, body, AK, SK,
                       sign_only=("content-type", "host", "user-agent", "x-project-id", "x-sdk-date"))
    assert ours["Authorization"] == wire["authorization"]


def test_replay_cache_forgets_after_the_window() -> None:
    now = [1000.0]
    cache = ReplayCache(clock=lambda: now[0])
    cache.remember("ab" * 32, until=1900.0)
    assert cache.seen("ab" * 32) and len(cache) == 1
    now[0] = 1901.0
    assert not cache.seen("ab" * 32) and len(cache) == 0


def test_a_missing_or_malformed_date_never_parses() -> None:
    assert signer.parse_timestamp("") is None
    assert signer.parse_timestamp("20261202T030000Z") == signer.parse_date("20261202T030000Z").timestamp()  # type: ignore[union-attr]
    assert signer.parse_timestamp("") is None  # the cache of the last good date does not answer for ""
    assert signer.parse_timestamp("20261302T030000Z") is None
