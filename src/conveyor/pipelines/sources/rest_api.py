"""HTTP APIs as a source, described declaratively (dlt's rest_api config)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, HttpUrl

from conveyor.pipelines import failures
from conveyor.pipelines.config import CopyOptions, HttpAuth, TypeConfig
from conveyor.pipelines.contract import CopyField, SourceType, TypeContext


class RestApiSourceConfig(CopyOptions, HttpAuth, TypeConfig):
    """A base URL, its auth, a default paginator and a list of resources."""

    CONNECTION_FIELDS: ClassVar[frozenset[str]] = frozenset({"base_url"})

    base_url: HttpUrl
    # dlt rest_api resources: names or dicts ({"name", "endpoint", "primary_key", ...}).
    resources: list[str | dict[str, Any]] = Field(default_factory=list)
    paginator: str | dict[str, Any] | None = None
    timeout: float = Field(default=30.0, gt=0, le=600)


# --- runtime (dlt is imported lazily) ---------------------------------------------


def dlt_auth(auth: HttpAuth) -> dict[str, Any] | None:
    """Conveyor's auth fields as a dlt rest_api auth config."""
    if auth.auth_type == "bearer_token":
        return {"type": "bearer", "token": auth.token}
    if auth.auth_type == "api_key":
        return {
            "type": "api_key",
            "name": auth.api_key_name,
            "api_key": auth.api_key,
            "location": "header",
        }
    if auth.auth_type == "basic":
        return {"type": "http_basic", "username": auth.username, "password": auth.password}
    return None


def rest_config(cfg: RestApiSourceConfig) -> dict[str, Any]:
    """The dlt ``RESTAPIConfig`` for this source."""
    client: dict[str, Any] = {"base_url": str(cfg.base_url)}
    auth = dlt_auth(cfg)
    if auth or cfg.headers:
        # Credentials and header values go only to the base URL's origin: a resource path
        # or a next-page link that is a full URL elsewhere is requested without them.
        client["auth"] = origin_bound_auth(str(cfg.base_url), auth, dict(cfg.headers))
    if cfg.paginator is not None:
        client["paginator"] = cfg.paginator
    defaults: dict[str, Any] = {"write_disposition": cfg.effective_write_disposition()}
    if cfg.primary_key:
        defaults["primary_key"] = cfg.primary_key
    return {
        "client": client,
        "resource_defaults": defaults,
        "resources": list(cfg.resources),
    }


class CredentialsRefused(PermissionError):
    """A request carrying the source's credentials was redirected to another origin."""


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme's default port made explicit."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def origin_bound_auth(base_url: str, auth: dict[str, Any] | None, headers: dict[str, str]) -> Any:
    """A dlt/requests auth that adds the credentials and headers to requests for the base
    URL's origin only, and refuses to follow a redirect of such a request elsewhere (requests
    would carry custom headers, such as an API key, along)."""
    from dlt.sources.rest_api.config_setup import create_auth

    inner = create_auth(auth) if auth else None  # type: ignore[arg-type]
    bound = _origin_bound_class()()
    bound.setup(origin(base_url), inner, headers)
    return bound


_BOUND_CLASS: Any = None


def _origin_bound_class() -> Any:
    global _BOUND_CLASS
    if _BOUND_CLASS is not None:
        return _BOUND_CLASS
    from dlt.common.configuration import configspec
    from dlt.sources.helpers.rest_client.auth import AuthConfigBase

    @configspec
    class OriginBoundAuth(AuthConfigBase):
        def setup(self, home: tuple[str, str, int | None], inner: Any, headers: Any) -> None:
            self._home, self._inner, self._headers = home, inner, headers
            self.__is_resolved__ = True

        def __call__(self, request: Any) -> Any:
            if origin(request.url) != self._home:
                return request  # another origin gets no credentials
            request.headers.update(self._headers)
            if self._inner is not None:
                request = self._inner(request)
            request.register_hook("response", self._refuse_redirect_elsewhere)
            return request

        def _refuse_redirect_elsewhere(self, response: Any, **_: Any) -> Any:
            if response.is_redirect:
                from urllib.parse import urljoin

                target = urljoin(response.url, response.headers.get("location", ""))
                if origin(target) != self._home:
                    raise CredentialsRefused(
                        f"{_show(response.url)} redirected to {_show(target)}: the source's "
                        "credentials are only sent to its base URL's origin"
                    )
            return response

    _BOUND_CLASS = OriginBoundAuth
    return OriginBoundAuth


def _show(url: str) -> str:
    scheme, host, port = origin(url)
    return f"{scheme}://{host}:{port}"


def build(cfg: RestApiSourceConfig) -> Any:
    """A dlt rest_api source; ``cursor_column`` adds an incremental cursor where none is set."""
    import dlt
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source(rest_config(cfg))  # type: ignore[arg-type]
    if cfg.cursor_column:
        for resource in source.resources.values():
            if resource.incremental is None:
                resource.apply_hints(
                    incremental=dlt.sources.incremental(
                        cfg.cursor_column, initial_value=cfg.initial_value
                    )
                )
    return source


def check(cfg: RestApiSourceConfig) -> str:
    """GET the first resource's endpoint (or the base URL) with the configured auth."""
    import httpx

    url = str(cfg.base_url)
    if cfg.resources:
        first = cfg.resources[0]
        path = first if isinstance(first, str) else _endpoint_path(first)
        url = url.rstrip("/") + "/" + path.lstrip("/")
    response = httpx.get(url, headers=request_headers(cfg), auth=basic_auth(cfg), timeout=10)
    if response.status_code in (401, 403):
        raise PermissionError(f"{url} answered {response.status_code}: credentials rejected")
    response.raise_for_status()
    return f"{url} answered {response.status_code}"


def _endpoint_path(resource: dict[str, Any]) -> str:
    endpoint = resource.get("endpoint")
    if isinstance(endpoint, str):
        return endpoint
    if isinstance(endpoint, dict) and endpoint.get("path"):
        return str(endpoint["path"])
    return str(resource.get("name", ""))


def request_headers(auth: HttpAuth) -> dict[str, str]:
    """Headers for bearer and API-key auth, plus the configured extra headers."""
    headers = dict(auth.headers)
    if auth.auth_type == "bearer_token":
        headers["Authorization"] = f"Bearer {auth.token}"
    elif auth.auth_type == "api_key" and auth.api_key:
        headers[auth.api_key_name] = auth.api_key
    return headers


def basic_auth(auth: HttpAuth) -> tuple[str, str] | None:
    if auth.auth_type == "basic":
        return (auth.username or "", auth.password or "")
    return None


def discover(cfg: RestApiSourceConfig) -> dict[str, Any]:
    """The configured resources and their endpoints (an API has no catalog to list)."""
    resources = []
    for resource in cfg.resources:
        if isinstance(resource, str):
            resources.append({"name": resource, "endpoint": resource})
        else:
            resources.append(
                {"name": str(resource.get("name", "")), "endpoint": _endpoint_path(resource)}
            )
    return {"base_url": str(cfg.base_url), "resources": resources}


# --- the type ---------------------------------------------------------------------


class RestApiSource(SourceType):
    """Resources of an HTTP API, described declaratively (dlt's rest_api)."""

    name = "rest_api"
    title = "REST API"
    config_model = RestApiSourceConfig
    failures = failures.HTTP
    copy_form = (
        CopyField(
            "resources",
            "Resources",
            help="Comma-separated endpoint names, e.g. customers, orders",
            many=True,
        ),
    )

    def build(self, config: Any, context: TypeContext) -> Any:
        return build(config)

    def check(self, config: Any, context: TypeContext) -> str:
        return check(config)

    def discover(self, config: Any, context: TypeContext) -> dict[str, Any]:
        return discover(config)
