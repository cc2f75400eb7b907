"""SDK-HMAC-SHA256, byte for byte as huaweicloudsdkcore's `Signer` builds it.

The same functions sign (the CLI, tests and benchmarks) and verify (the server), so the two sides
cannot drift apart:

    CanonicalRequest = METHOD \\n URI \\n QUERY \\n HEADERS \\n SIGNED \\n PAYLOADHASH
    StringToSign     = "SDK-HMAC-SHA256" \\n X-Sdk-Date \\n hex(sha256(CanonicalRequest))
    Signature        = hex(HMAC-SHA256(SK, StringToSign))
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlsplit

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_HASH = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
CONTENT_HASH_HEADER = "x-sdk-content-sha256"
AUTH_RE = re.compile(r"^SDK-HMAC-SHA256 Access=([^,]+), SignedHeaders=([^,]+), Signature=([0-9a-f]+)$")
MAX_QUERY_FIELDS = 1000
_UNRESERVED_PATH = re.compile(r"^[A-Za-z0-9_.~/-]+$", re.ASCII)
DATE_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$", re.ASCII)

# What our own clients sign (those present): the SDK signs the same set, plus User-Agent.
CLIENT_SIGNED = ("content-type", "host", "x-project-id", "x-sdk-date", "x-openarts-nonce")


class Authorization(NamedTuple):
    access_key: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str) -> Authorization | None:
    """The Authorization header's three fields, or None when it is not an SDK-HMAC-SHA256 header."""
    m = AUTH_RE.match(value)
    if not m:
        return None
    access_key, names, sig = m.groups()
    if names != names.lower():
        return None
    signed = tuple(names.split(";"))
    if "" in signed:
        return None
    return Authorization(access_key, signed, sig)


def canonical_uri(raw_path: str) -> str:
    """Unquote, split on '/', quote each segment (safe '~'), join, and always end with '/'."""
    if _UNRESERVED_PATH.match(raw_path):  # nothing to unquote or quote: the same result, faster
        return raw_path if raw_path.endswith("/") else raw_path + "/"
    path = "/".join(quote(seg, safe="~") for seg in unquote(raw_path).split("/"))
    return path if path.endswith("/") else path + "/"


def canonical_query(raw_query: str, max_fields: int | None = None) -> str:
    """The query's (key, value) pairs sorted on their decoded values, each re-quoted (safe '~').
    More than `max_fields` pairs raise ValueError (the server's bound on work per request)."""
    if not raw_query:
        return ""
    pairs = parse_qsl(raw_query, keep_blank_values=True, max_num_fields=max_fields)
    pairs.sort()
    return "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in pairs)


def canonical_headers(headers: Mapping[str, str], signed: Iterable[str]) -> str:
    """One `name:value` line per signed header (names lowercase, values stripped), each ending in \\n."""
    return "".join([f"{name}:{headers[name].strip()}\n" for name in signed])


def payload_hash(body: bytes, headers: Mapping[str, str]) -> str:
    if not body:
        return EMPTY_HASH
    declared = headers.get(CONTENT_HASH_HEADER)
    if declared:
        return declared
    return hashlib.sha256(body).hexdigest()


def canonical_request(method: str, raw_path: str, raw_query: str, headers: Mapping[str, str],
                      signed: Iterable[str], body: bytes, max_fields: int | None = None) -> str:
    signed = list(signed)
    return "\n".join([method.upper(), canonical_uri(raw_path), canonical_query(raw_query, max_fields),
                      canonical_headers(headers, signed), ";".join(signed), payload_hash(body, headers)])


def string_to_sign(sdk_date: str, canonical: str) -> str:
    return f"{ALGORITHM}\n{sdk_date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def keyed(secret_key: str | bytes) -> hmac.HMAC:
    """HMAC-SHA256 keyed once; the server keeps one per access key and signs with copies of it
    (a one-shot HMAC looks the digest up and sets the key up again on every call)."""
    return hmac.new(secret_key.encode() if isinstance(secret_key, str) else secret_key, digestmod="sha256")


def signature(secret_key: str | bytes | hmac.HMAC, sts: str) -> str:
    mac = secret_key.copy() if isinstance(secret_key, hmac.HMAC) else keyed(secret_key)
    mac.update(sts.encode())
    return mac.hexdigest()


def parse_timestamp(value: str) -> float | None:
    """X-Sdk-Date as epoch seconds; None when malformed. The last answer is kept: every request
    signed in the same second carries the same date."""
    last_value, last_ts = _last_date[0]
    if value == last_value:  # never "" (the cache starts with None; a malformed value is not kept)
        return last_ts
    when = parse_date(value)
    if when is None:
        return None
    ts = when.timestamp()
    _last_date[0] = (value, ts)  # one tuple, replaced whole: safe to read from any thread
    return ts


_last_date: list[tuple[str | None, float]] = [(None, 0.0)]


def parse_date(value: str) -> datetime | None:
    """X-Sdk-Date (UTC, exactly YYYYMMDDTHHMMSSZ) as an aware datetime; None when malformed."""
    m = DATE_RE.match(value)
    if m is None:
        return None
    try:
        y, mo, d, h, mi, sec = (int(g) for g in m.groups())
        return datetime(y, mo, d, h, mi, sec, tzinfo=UTC)
    except ValueError:  # e.g. month 13
        return None


def format_date(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).astimezone(UTC).strftime(DATE_FORMAT)


def expected_signature(secret_key: str | bytes | hmac.HMAC, method: str, raw_path: str, raw_query: str,
                       headers: Mapping[str, str], signed: Iterable[str], body: bytes,
                       max_fields: int | None = None) -> str:
    """The signature a correct client computes for this request (headers: lowercase names)."""
    canonical = canonical_request(method, raw_path, raw_query, headers, signed, body, max_fields)
    return signature(secret_key, string_to_sign(headers["x-sdk-date"], canonical))


def sign(method: str, url: str, headers: Mapping[str, str], body: bytes, access_key: str, secret_key: str,
         when: datetime | None = None, sign_only: Iterable[str] = CLIENT_SIGNED) -> dict[str, str]:
    """Headers to add to a request so that it verifies: X-Sdk-Date and Authorization.

    `url` is the URL exactly as it will be sent (scheme, host, path and query); `headers` are the
    request's headers (any case). Host is taken from the URL unless given. Signed: the headers named
    in `sign_only` that the request has.
    """
    parts = urlsplit(url)
    lower = {k.lower(): str(v) for k, v in headers.items()}
    lower.setdefault("host", parts.netloc)
    lower["x-sdk-date"] = lower.get("x-sdk-date") or format_date(when)
    signed = sorted(h for h in set(sign_only) if h in lower)
    sig = expected_signature(secret_key, method, parts.path or "/", parts.query, lower, signed, body)
    return {
        "X-Sdk-Date": lower["x-sdk-date"],
        "Authorization": f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(signed)}, Signature={sig}",
    }
