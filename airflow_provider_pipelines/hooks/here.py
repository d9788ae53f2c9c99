"""HERE platform Pipeline API v2 hook: signed-token auth, pipeline version operations, jobs.

Facts: ``shared/api/here.md``. Paths are relative to the Pipeline API base URL
(default ``https://pipelines.api.platform.here.com/pipeline-service``), e.g.
``{base}/v2/pipelines/{pipelineId}/versions/{versionId}/operations/activate``.

Authentication is HERE's OAuth 2.0 client-credentials token, requested with an OAuth 1.0a
HMAC-SHA256 signed ``POST`` to the token endpoint (here.md B.4). The signature is computed in an
``ApiRequest.headers_factory``, so every attempt (a retry after a 429, a refresh after a 401)
carries a fresh nonce and timestamp. Tokens are cached process-wide and refreshed before
``expires_in`` runs out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urljoin, urlsplit

from airflow_provider_pipelines._compat import AirflowException, Connection
from airflow_provider_pipelines.hooks._auth import CachedTokenAuth, credential_key
from airflow_provider_pipelines.hooks._base import PipelinesHook, ResolvedConnection, require
from airflow_provider_pipelines.hooks._http import (
    ApiError,
    ApiRequest,
    ApiResponse,
    HttpCore,
    HttpSettings,
    Redactor,
    is_loopback_host,
    require_https,
)

#: The Pipeline API base URL known from HERE's API Lookup (here.md B.0).
DEFAULT_BASE_URL = "https://pipelines.api.platform.here.com/pipeline-service"
#: ``here.token.endpoint.url`` default (here.md B.4). China uses a different endpoint.
DEFAULT_TOKEN_ENDPOINT_URL = "https://account.api.here.com/oauth2/token"  # noqa: S105 - a URL
#: Domains whose hosts may receive the bearer token when an operation answers 307 (besides the
#: connection's own host). Following a redirect by hand and re-sending the token only to HERE is
#: client behaviour we chose (here.md B.1), not something HERE documents.
TRUSTED_REDIRECT_DOMAINS = ("here.com", "hereolp.cn")
#: Longest chain of 307 redirects followed for one operation.
MAX_REDIRECTS = 3
#: Token lifetime assumed when the token endpoint omits ``expires_in`` (the spec example value;
#: real tokens live up to 24 h, so this errs towards refreshing early).
FALLBACK_TOKEN_LIFETIME = 3600.0

#: What to fix for the token endpoint's most common refusals (here.md B.4), for ``test_connection``.
TOKEN_ERROR_HINTS = {
    "401300": "check the access key id (login) and secret (password) against credentials.properties.",
    "401310": "the login is a client id; use here.access.key.id from credentials.properties.",
    "401204": "this machine's clock is off; HERE refuses signatures with a timestamp too far from its own.",
    "401424": "the access key is disabled; enable it or create new credentials in the HERE platform portal.",
    "400981": "'scope' must be a single project HRN.",
    "403109": "the app is not a member of the project named in 'scope'.",
}
#: The version operations this hook can request (here.md B.1/B.2; ``upgrade`` needs a body we
#: do not build).
VERSION_OPERATIONS = ("activate", "cancel", "deactivate", "pause", "resume")

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_PIPELINE_HRN = re.compile(r"^hrn:[a-z-]+:pipeline:[^:]*:[^:]*:(?P<uuid>[0-9a-fA-F-]{36})$")

#: ``credentials.properties`` keys (here.md B.4) and the connection field each one fills.
CREDENTIALS_PROPERTIES_KEYS = {
    "here.access.key.id": "login",
    "here.access.key.secret": "password",
    "here.token.endpoint.url": "token_endpoint_url",
    "here.token.scope": "scope",
}


def here_id(name: str, value: Any) -> str:
    """A HERE UUID identifier (pipeline, version, operation or job id), or a ``ValueError``."""
    text = str(value).strip() if isinstance(value, str) else ""
    if _UUID.match(text):
        return text
    hrn = _PIPELINE_HRN.match(text)
    if hrn:
        raise ValueError(f"{name} must be the UUID, not the HRN: use {hrn.group('uuid')!r} from {text!r}.")
    raise ValueError(
        f"{name} must be a HERE UUID like '00112233-4455-6677-8899-aabbccddeeff', got {value!r}."
    )


# --------------------------------------------------------------------------------------------
# OAuth 1.0a HMAC-SHA256 request signing (RFC 5849 §3.4; here.md B.4)
# --------------------------------------------------------------------------------------------


def percent_encode(value: str) -> str:
    """RFC 3986 percent-encoding (only ``A-Z a-z 0-9 - . _ ~`` left as is)."""
    return quote(str(value), safe="-._~")


def _base_string_uri(url: str) -> str:
    """Scheme and host in lower case, default port dropped, no query or fragment (RFC 5849 §3.4.1.2)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port
    if port is not None and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path or '/'}"


def signature_base_string(method: str, url: str, params: Mapping[str, str]) -> str:
    """``METHOD&pct(url)&pct(sorted, encoded parameters)``: exactly two raw ``&``.

    ``params`` are the ``oauth_*`` parameters plus the form body parameters (and any query
    parameters of ``url``), unencoded.
    """
    pairs = [(percent_encode(k), percent_encode(v)) for k, v in params.items()]
    query = urlsplit(url).query
    if query:
        pairs += [(percent_encode(k), percent_encode(v)) for k, v in parse_qsl(query, keep_blank_values=True)]
    parameter_string = "&".join(f"{k}={v}" for k, v in sorted(pairs))
    return "&".join((method.upper(), percent_encode(_base_string_uri(url)), percent_encode(parameter_string)))


def hmac_sha256_signature(base_string: str, consumer_secret: str) -> str:
    """Base64 HMAC-SHA256 of the base string, keyed ``pct(secret)&`` (no token secret)."""
    key = f"{percent_encode(consumer_secret)}&".encode()
    return base64.b64encode(hmac.new(key, base_string.encode(), hashlib.sha256).digest()).decode()


def oauth1_authorization_header(
    consumer_key: str,
    consumer_secret: str,
    url: str,
    body_params: Mapping[str, str],
    *,
    method: str = "POST",
    nonce: str | None = None,
    timestamp: int | None = None,
) -> str:
    """The ``Authorization: OAuth ...`` value for one token request (fresh nonce unless given)."""
    oauth = {
        "oauth_consumer_key": consumer_key,
        "oauth_nonce": nonce if nonce is not None else secrets.token_hex(16),
        "oauth_signature_method": "HMAC-SHA256",
        "oauth_timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "oauth_version": "1.0",
    }
    base_string = signature_base_string(method, url, {**oauth, **body_params})
    oauth["oauth_signature"] = hmac_sha256_signature(base_string, consumer_secret)
    return "OAuth " + ",".join(f'{k}="{percent_encode(v)}"' for k, v in sorted(oauth.items()))


def token_request_body(scope: str | None) -> dict[str, str]:
    """The form body of the token request; every parameter of it is also signed."""
    body = {"grant_type": "client_credentials"}
    if scope:
        body["scope"] = scope
    return body


def parse_token_response(body: Any, token_url: str) -> tuple[str, float]:
    """``(access token, lifetime in s)`` from a snake_case (form) or camelCase (JSON) answer."""
    if not isinstance(body, dict):
        raise AirflowException(f"HERE token endpoint {token_url} answered without a JSON object.")
    token = body.get("access_token") or body.get("accessToken")
    if not token:
        raise AirflowException(f"HERE token endpoint {token_url} answered without an access_token.")
    lifetime = body.get("expires_in", body.get("expiresIn"))
    try:
        seconds = float(lifetime) if lifetime not in (None, "") else FALLBACK_TOKEN_LIFETIME
    except (TypeError, ValueError):
        seconds = FALLBACK_TOKEN_LIFETIME
    return str(token), seconds if seconds > 0 else FALLBACK_TOKEN_LIFETIME


# --------------------------------------------------------------------------------------------
# credentials.properties
# --------------------------------------------------------------------------------------------

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def parse_credentials_properties(text: str) -> dict[str, str]:
    """Parse a Java ``.properties`` text (``key = value``, ``key: value``, ``#``/``!`` comments)."""
    props: dict[str, str] = {}
    logical: list[str] = []
    for raw in str(text).splitlines():
        line = raw.lstrip()
        if not logical and (not line or line[0] in "#!"):
            continue
        # a line ending in an odd number of backslashes continues on the next line
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            logical.append(line[:-1])
            continue
        logical.append(line)
        entry, logical = "".join(logical), []
        match = re.match(r"((?:\\.|[^\s=:\\])+)\s*[=:]?\s*(.*)$", entry)
        if match:
            props[_unescape(match.group(1))] = _unescape(match.group(2).rstrip())
    return props


def connection_from_credentials_properties(
    text: str, *, host: str | None = None, conn_type: str = "here_platform"
) -> dict[str, Any]:
    """The ``AIRFLOW_CONN_<ID>`` JSON fields for the credentials in a HERE ``credentials.properties``.

    ``json.dumps`` the result into ``AIRFLOW_CONN_HERE_DEFAULT`` (or a secrets backend). The
    optional ``here.token.scope`` becomes the ``scope`` extra. ``host`` sets a non-default Pipeline
    API base URL (e.g. the China region).
    """
    props = parse_credentials_properties(text)
    missing = [k for k in ("here.access.key.id", "here.access.key.secret") if not props.get(k)]
    if missing:
        raise ValueError(f"credentials.properties has no {' or '.join(missing)}; download the file again "
                         "from the HERE platform portal (Apps & keys > OAuth 2.0 > Create credentials).")
    extra: dict[str, str] = {
        "token_endpoint_url": props.get("here.token.endpoint.url") or DEFAULT_TOKEN_ENDPOINT_URL,
    }
    if props.get("here.token.scope"):
        extra["scope"] = props["here.token.scope"]
    conn: dict[str, Any] = {
        "conn_type": conn_type,
        "login": props["here.access.key.id"],
        "password": props["here.access.key.secret"],
        "extra": extra,
    }
    if host:
        conn["host"] = host
    return conn


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def _get_header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value


def _error_text(error: Mapping[str, Any]) -> str:
    """One ``ErrorMessage`` (Pipeline API) or ``ErrorResponse`` (token endpoint) as text."""
    message = str(error.get("message") or error.get("error_description") or error.get("error") or "")
    codes = [f"{key} {error[key]}" for key in ("code", "errorCode") if error.get(key) not in (None, "")]
    if error.get("errorId"):
        codes.append(f"errorId {error['errorId']}")
    if codes:
        message = f"{message} ({', '.join(codes)})" if message else ", ".join(codes)
    details = []
    for item in list(error.get("errors") or []) + list(error.get("errorFields") or []):
        if isinstance(item, Mapping):
            where = item.get("field") or item.get("name")
            text = str(item.get("message") or "")
            details.append(f"{where}: {text}" if where else text)
    if details:
        message += ": " + "; ".join(d for d in details if d)
    return message


class HereProfile:
    """How HERE reports errors: ``ErrorMessage``/``ErrorResponse`` objects, or arrays of them.

    Request ids: the ``X-Request-ID``/``X-Correlation-ID`` response headers, else the values we
    sent (every Pipeline API call sends both).
    """

    name = "HERE"

    def error_message(self, status: int, body: Any, text: str) -> str:
        items = body if isinstance(body, list) else [body]
        texts = [_error_text(item) for item in items if isinstance(item, Mapping)]
        return "; ".join(text for text in texts if text)

    def request_ids(
        self, response_headers: Mapping[str, str], sent_headers: Mapping[str, str]
    ) -> tuple[str | None, str | None]:
        def pick(name: str) -> str | None:
            return _get_header(response_headers, name) or _get_header(sent_headers, name)

        return pick("X-Request-ID"), pick("X-Correlation-ID")

    def body_error(self, body: Any) -> str | None:
        return None


# --------------------------------------------------------------------------------------------
# The hook
# --------------------------------------------------------------------------------------------


class HerePipelineHook(PipelinesHook):
    """Talks to the HERE platform Pipeline API v2.

    Connection (conn type ``here_platform``): login = access key id (``here.access.key.id``),
    password = access key secret (``here.access.key.secret``); host = Pipeline API base URL
    (default :data:`DEFAULT_BASE_URL`); extra: ``token_endpoint_url`` (default
    :data:`DEFAULT_TOKEN_ENDPOINT_URL`), ``scope`` (a project HRN, for a project-scoped token),
    or ``credentials_properties`` (the whole ``credentials.properties`` text, filling whichever of
    the fields above are empty). Optional extras: ``connect_timeout``, ``read_timeout``,
    ``max_attempts``, ``max_retry_seconds``, ``ca_bundle``.

    :param here_conn_id: the Airflow connection id.
    :param correlation_id: ``X-Correlation-ID`` sent with every Pipeline API call of this hook
        (operators derive one per task try); a random UUID when not given.
    """

    conn_name_attr = "here_conn_id"
    default_conn_name = "here_default"
    conn_type = "here_platform"
    hook_name = "HERE platform"
    profile: ClassVar[HereProfile] = HereProfile()

    def __init__(
        self, here_conn_id: str = default_conn_name, correlation_id: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(here_conn_id, **kwargs)
        self.here_conn_id = self.conn_id
        self.correlation_id = correlation_id or str(uuid.uuid4())

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_provider_pipelines.get_provider_info import connection_ui

        return connection_ui("here_platform")

    # ---- connection -------------------------------------------------------------------------

    def _resolve(self, conn: Connection, extra: Mapping[str, Any]) -> ResolvedConnection:
        cid = self.conn_id
        props: dict[str, str] = {}
        if extra.get("credentials_properties"):
            props = parse_credentials_properties(str(extra["credentials_properties"]))
        host = str(conn.host or DEFAULT_BASE_URL).strip()
        if "://" not in host:
            host = f"https://{host}"
        base_url = require_https(host, conn_id=cid)
        hint = "Set it from credentials.properties (see connection_from_credentials_properties)."
        access_key_id = str(require(conn.login or props.get("here.access.key.id"),
                                    "access key id (login)", cid, hint))
        secret = str(require(conn.password or props.get("here.access.key.secret"),
                             "access key secret (password)", cid, hint))
        token_url = extra.get("token_endpoint_url") or props.get("here.token.endpoint.url")
        token_url = require_https(str(token_url or DEFAULT_TOKEN_ENDPOINT_URL), conn_id=cid,
                                  field_name="token_endpoint_url")
        scope = str(extra.get("scope") or props.get("here.token.scope") or "").strip() or None
        http = HttpSettings.from_extra(extra, cid)
        secrets_list = [secret]
        auth = self._signed_token_auth(token_url, access_key_id, secret, scope, http, secrets_list)
        return ResolvedConnection(
            base_url=base_url, http=http, auth=auth, secrets=secrets_list,
            options={"hostname": (urlsplit(base_url).hostname or "").lower(), "token_url": token_url,
                     "scope": scope},
        )

    def _signed_token_auth(
        self, token_url: str, access_key_id: str, secret: str, scope: str | None, http: HttpSettings,
        secrets_list: list[str],
    ) -> CachedTokenAuth:
        core = HttpCore(self.profile, http, None, Redactor(secrets_list), self._default_headers())
        body = token_request_body(scope)

        def sign() -> dict[str, str]:  # called before every attempt: a fresh nonce each time
            return {"Authorization": oauth1_authorization_header(access_key_id, secret, token_url, body)}

        def request() -> ApiRequest:
            return ApiRequest(
                "POST", token_url, "request an access token", f"access key {access_key_id} at {token_url}",
                data=dict(body), headers={"Content-Type": "application/x-www-form-urlencoded"},
                headers_factory=sign, authenticated=False, idempotent=True,
            )

        def fetch() -> tuple[str, float]:
            return parse_token_response(core.request(request()).body, token_url)

        async def afetch() -> tuple[str, float]:
            return parse_token_response((await core.arequest(request())).body, token_url)

        key = credential_key("here", token_url, access_key_id, scope, secret)
        return CachedTokenAuth(key, fetch, afetch)

    # ---- per-request headers -------------------------------------------------------------------

    def _trace_headers(self) -> dict[str, str]:
        """A new ``X-Request-ID`` per HTTP request; the hook's ``X-Correlation-ID`` on all of them."""
        return {"X-Request-ID": str(uuid.uuid4()), "X-Correlation-ID": self.correlation_id}

    def _new_request(
        self, url: str, method: str, operation: str, resource: str | None, kw: dict[str, Any]
    ) -> ApiRequest:
        # headers_factory runs before every attempt: a reused request still gets fresh ids
        return ApiRequest(method, url, operation, resource, **{"headers_factory": self._trace_headers, **kw})

    def _redirectable(self, url: str, spec: Mapping[str, Any]) -> ApiRequest:
        """The request of an operation ``spec`` sent to ``url`` (the spec's path, or a 307's target)."""
        kw = {k: v for k, v in spec.items() if k not in ("method", "path", "operation", "resource")}
        return self._new_request(url, spec["method"], spec["operation"], spec.get("resource"), kw)

    # ---- 307 on state-changing operations ---------------------------------------------------

    def redirect_target(self, current_url: str, resp: ApiResponse, spec: Mapping[str, Any]) -> str:
        """Where a 307 points, if the bearer token may be sent there; else a clear :class:`ApiError`.

        Trusted: the connection's own host and hosts under :data:`TRUSTED_REDIRECT_DOMAINS`, over
        https (plain http only for loopback, i.e. the sandbox).
        """
        request_id, correlation_id = self.profile.request_ids(resp.headers, {})
        location = resp.headers.get("Location")  # ApiResponse.headers is case-insensitive

        def refuse(why: str) -> ApiError:
            return ApiError(vendor=self.profile.name, operation=spec["operation"],
                            resource=spec.get("resource"), status=307, vendor_message=why,
                            request_id=request_id, correlation_id=correlation_id or self.correlation_id)

        if not location:
            raise refuse("the redirect has no Location header")
        target = urljoin(current_url, location)
        parts = urlsplit(target)
        host = (parts.hostname or "").lower().rstrip(".")
        trusted = host == self.resolved.options["hostname"] or any(
            host == domain or host.endswith(f".{domain}") for domain in TRUSTED_REDIRECT_DOMAINS
        )
        if not trusted:
            here_hosts = ", ".join(f"*.{domain}" for domain in TRUSTED_REDIRECT_DOMAINS)
            raise refuse(
                f"redirected to {parts.scheme}://{parts.netloc}, which is neither the connection's host "
                f"({self.resolved.options['hostname']}) nor a HERE host ({here_hosts}); the request was not "
                "repeated there and no token was sent"
            )
        if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback_host(host)):
            raise refuse(f"redirected to {target!r}, which is not https; the request was not repeated")
        return target

    def _operation_spec(self, pipeline_id: str, version_id: str, name: str, body: Any) -> dict[str, Any]:
        if name not in VERSION_OPERATIONS:
            raise ValueError(f"Unknown pipeline version operation {name!r}; use one of {VERSION_OPERATIONS}.")
        pid, vid = here_id("pipeline_id", pipeline_id), here_id("pipeline_version_id", version_id)
        spec: dict[str, Any] = {
            "method": "POST", "path": f"/v2/pipelines/{pid}/versions/{vid}/operations/{name}",
            "operation": f"{name} pipeline version", "resource": f"pipeline {pid} version {vid}",
            "idempotent": False, "allow_statuses": frozenset({307}),
        }
        if body is not None:
            spec["json"] = body
        return spec

    def version_operation(
        self, pipeline_id: str, version_id: str, name: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Request an operation (``activate``, ``cancel``, ...); returns the accepted ``Operation``.

        A 307 is followed by hand, with the same method and body, only to trusted HERE hosts.
        """
        spec = self._operation_spec(pipeline_id, version_id, name, body)
        url = self.url(spec["path"])
        for _ in range(MAX_REDIRECTS + 1):
            resp = self.core.request(self._redirectable(url, spec))
            if resp.status != 307:
                return dict(resp.body or {})
            url = self.redirect_target(url, resp, spec)
        raise self._too_many_redirects(spec)

    async def aversion_operation(
        self, pipeline_id: str, version_id: str, name: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        spec = self._operation_spec(pipeline_id, version_id, name, body)
        core = await self.acore()
        url = self.url(spec["path"])
        for _ in range(MAX_REDIRECTS + 1):
            resp = await core.arequest(self._redirectable(url, spec))
            if resp.status != 307:
                return dict(resp.body or {})
            url = self.redirect_target(url, resp, spec)
        raise self._too_many_redirects(spec)

    def _too_many_redirects(self, spec: Mapping[str, Any]) -> ApiError:
        return ApiError(vendor=self.profile.name, operation=spec["operation"], resource=spec.get("resource"),
                        status=307, vendor_message=f"more than {MAX_REDIRECTS} redirects",
                        correlation_id=self.correlation_id)

    # ---- request specs (shared by the sync and async methods) ----------------------------------

    @staticmethod
    def _version_path(pipeline_id: str, version_id: str) -> tuple[str, str]:
        pid, vid = here_id("pipeline_id", pipeline_id), here_id("pipeline_version_id", version_id)
        return f"/v2/pipelines/{pid}/versions/{vid}", f"pipeline {pid} version {vid}"

    def _spec_get_version(self, pipeline_id: str, version_id: str, verbose: bool) -> dict[str, Any]:
        path, resource = self._version_path(pipeline_id, version_id)
        return {"method": "GET", "path": path, "operation": "get pipeline version", "resource": resource,
                "params": {"verbose": "true" if verbose else "false"}}

    def _spec_get_operation(self, pipeline_id: str, version_id: str, operation_id: str) -> dict[str, Any]:
        path, resource = self._version_path(pipeline_id, version_id)
        oid = here_id("operation_id", operation_id)
        return {"method": "GET", "path": f"{path}/operations/{oid}", "operation": "get operation",
                "resource": f"{resource} operation {oid}"}

    def _spec_list_jobs(self, pipeline_id: str, version_id: str) -> dict[str, Any]:
        path, resource = self._version_path(pipeline_id, version_id)
        return {"method": "GET", "path": f"{path}/jobs", "operation": "list jobs", "resource": resource}

    # ---- pipeline versions ------------------------------------------------------------------------

    def get_pipeline_version(self, pipeline_id: str, version_id: str, verbose: bool = True) -> dict[str, Any]:
        """The ``PipelineVersion``; ``verbose`` adds ``latestOperation`` and ``latestJob``."""
        return dict(self.call(**self._spec_get_version(pipeline_id, version_id, verbose)).body or {})

    async def aget_pipeline_version(
        self, pipeline_id: str, version_id: str, verbose: bool = True
    ) -> dict[str, Any]:
        return dict((await self.acall(**self._spec_get_version(pipeline_id, version_id, verbose))).body or {})

    def schedule_pipeline_version(
        self, pipeline_id: str, version_id: str, catalog_versions: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """``POST .../operations/activate`` (``schedulePipelineVersion``); returns the ``Operation``.

        With ``inputCatalogs`` in ``catalog_versions`` this is a one-time run-now.
        """
        return self.version_operation(pipeline_id, version_id, "activate", catalog_versions or None)

    async def aschedule_pipeline_version(
        self, pipeline_id: str, version_id: str, catalog_versions: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self.aversion_operation(pipeline_id, version_id, "activate", catalog_versions or None)

    def get_operation(self, pipeline_id: str, version_id: str, operation_id: str) -> dict[str, Any]:
        return dict(self.call(**self._spec_get_operation(pipeline_id, version_id, operation_id)).body or {})

    async def aget_operation(self, pipeline_id: str, version_id: str, operation_id: str) -> dict[str, Any]:
        spec = self._spec_get_operation(pipeline_id, version_id, operation_id)
        return dict((await self.acall(**spec)).body or {})

    def list_jobs(self, pipeline_id: str, version_id: str) -> list[dict[str, Any]]:
        """Jobs the version ran or is running (order unconfirmed; callers sort by ``created``)."""
        return list(self.call(**self._spec_list_jobs(pipeline_id, version_id)).body or [])

    async def alist_jobs(self, pipeline_id: str, version_id: str) -> list[dict[str, Any]]:
        return list((await self.acall(**self._spec_list_jobs(pipeline_id, version_id))).body or [])

    # ---- connection test ---------------------------------------------------------------------------

    def _explain_failure(self, err: ApiError) -> str:
        message = err.vendor_message
        hints = [hint for code, hint in TOKEN_ERROR_HINTS.items() if f"errorCode {code}" in message]
        return f"{err} Hint: {hints[0]}" if hints else str(err)

    def _probe(self) -> str:
        pipelines = self.call("GET", "/v2/pipelines", "list pipelines").body
        count = len(pipelines) if isinstance(pipelines, list) else 0
        return f"Connected to the HERE Pipeline API at {self.resolved.base_url} ({count} pipelines visible)."
