"""`cdc-sync api`: the send-time profile API, read through the Redis cache.

The email provider asks for a profile while it renders a message: by id, or by an identifier
(`?identifier=email:ann@example.com`, or `?email=`). Answers come from the Redis cache
(documents keyed by profile id, which the daemon drops whenever the profile changes; an
identifier's profile id, and a merged id's survivor, are cached beside them and checked
against the document), else from Postgres, which fills the cache. Redis down means answers
from Postgres: slower, not errors.

A merged profile's old id answers with the survivor's document (its `id` is the survivor's,
its `aliases` hold the id asked for) and a `Content-Location` header naming the survivor.
Errors are RFC 9457 problem documents (`application/problem+json`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import orjson
import structlog
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from cdc_sync import __version__
from cdc_sync.adapters import store as store_mod
from cdc_sync.adapters.cache import ProfileCache
from cdc_sync.core import sendtime, tokens
from cdc_sync.core.config import Config
from cdc_sync.core.errors import TransientError
from cdc_sync.core.mapping import Normalizer, normalize
from cdc_sync.core.views import history_document, profile_document
from cdc_sync.services import caching

log = structlog.get_logger("cdc_sync.api")

PROBLEM = "application/problem+json"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own name for it


class Problem(Exception):
    """An answer other than the document: its status, title and detail (never a value asked for)."""

    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers = status, title, detail, headers or {}


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"type": "about:blank", "title": title, "status": status, "detail": detail},
                        status_code=status, media_type=PROBLEM, headers=headers)


class Metrics:
    """The API's own series, on a registry of its own (several apps may live in one test).
    Under `--workers N` each worker is a process: prometheus-client's multiprocess mode
    (PROMETHEUS_MULTIPROC_DIR, set by `serve`) keeps their values in files, and a scrape of
    any worker sums them all."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("cdc_sync_api_requests", "API requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("cdc_sync_api_request_seconds", "API request latency by route", ["route"],
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5),
                                 registry=self.registry)
        self.cache = Counter("cdc_sync_api_cache", "Profile cache lookups by result (hit, miss, unavailable)",
                             ["result"], registry=self.registry)

    def exposition(self) -> bytes:
        if os.environ.get(MULTIPROC_ENV):
            every_worker = CollectorRegistry()
            multiprocess.MultiProcessCollector(every_worker)  # type: ignore[no-untyped-call]
            return generate_latest(every_worker)
        return generate_latest(self.registry)


class Redis:
    """The cache, skipped for a few seconds after it fails (a Redis down answers at once, but
    one that hangs would cost every request its socket timeout). Unbound until the store's
    namespace, which names its keys, has been read."""

    def __init__(self, url: str, ttl_seconds: int, skip_s: float = 5.0) -> None:
        self.url, self.ttl, self.skip_s = url, ttl_seconds, skip_s
        self.cache: ProfileCache | None = None
        self._down_until = 0.0

    def bind(self, namespace: str | None) -> None:
        if namespace is None:
            self.cache = None
        elif self.cache is None or self.cache.namespace != namespace:
            self.cache = ProfileCache(self.url, self.ttl, namespace)

    def skipping(self) -> bool:
        return time.monotonic() < self._down_until

    def state(self) -> str:
        if self.cache is None:
            return "not in use: the profile store is not migrated yet (answers come from Postgres)"
        return "skipped after a failure (answers come from Postgres)" if self.skipping() else "in use"

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(cache, *args)`, e.g. `call(ProfileCache.get, 42)`; None when the cache is not there."""
        if self.cache is None or time.monotonic() < self._down_until:
            return None
        try:
            return fn(self.cache, *args)
        except TransientError as exc:
            if time.monotonic() >= self._down_until:
                log.warning("profile cache unavailable; answering from Postgres", error=str(exc),
                            retry_in_s=self.skip_s)
            self._down_until = time.monotonic() + self.skip_s
            return None


class Profiles:
    """Send-time documents by id or identifier: the cache, else Postgres (which fills it)."""

    def __init__(self, cfg: Config, pool: Any, redis: Redis, metrics: Metrics) -> None:
        self.cfg, self.pool, self.redis, self.metrics = cfg, pool, redis, metrics
        self._bind_next = 0.0
        self.shape = sendtime.Shape.of(cfg.triggers, cfg.api.recent_orders)
        self._normalizers: dict[str, Normalizer] = {}
        for table in cfg.mapping.tables.values():
            for kind, spec in table.identifiers.items():
                self._normalizers.setdefault(kind, spec.normalize)

    def normalized(self, kind: str, value: str) -> tuple[str, str]:
        return kind, normalize(value, self._normalizers.get(kind, "none"))

    def by_id(self, requested: int) -> dict[str, Any] | None:
        self.bind()
        doc = self._counted(self._cached_by_id(requested))
        if doc is not None:
            return doc
        survivor = self._resolve(profile_id=requested)
        if survivor is None:
            return None
        doc = self._document(survivor)
        if doc is not None and doc["id"] != requested:
            self.redis.call(ProfileCache.put_alias, requested, doc["id"])
        return doc

    def _cached_by_id(self, requested: int) -> dict[str, Any] | None:
        raw, survivor = self.redis.call(ProfileCache.get_or_alias, requested) or (None, None)
        if raw is not None:
            own: dict[str, Any] = orjson.loads(raw)
            if own["id"] == requested:
                return own
        if survivor is not None:  # a merged id
            doc = self._cached(survivor)
            if doc is not None and requested in doc["aliases"]:
                return doc  # the survivor's entry is dropped by any change to it, a merge too
        return None

    def by_identifier(self, kind: str, value: str) -> dict[str, Any] | None:
        self.bind()
        doc = self._counted(self._cached_by_identifier(kind, value))
        if doc is not None:
            return doc
        survivor = self._resolve(identifier=(kind, value), live_only=True)
        if survivor is None:
            return None
        doc = self._document(survivor)
        if doc is not None:
            self.redis.call(ProfileCache.put_identifier, kind, value, doc["id"])
        return doc

    def _cached_by_identifier(self, kind: str, value: str) -> dict[str, Any] | None:
        cached_id = self.redis.call(ProfileCache.get_identifier, kind, value)
        if cached_id is not None:
            doc = self._cached(cached_id)
            if doc is not None and sendtime.live_identifier(doc, kind, value):
                return doc  # any change to that profile (losing the identifier too) drops its entry
        return None

    def bind(self) -> None:
        """Read the store's cache namespace now and then (a store dropped and migrated anew gets
        another): every minute once known, every 5 s while the store is not migrated."""
        now = time.monotonic()
        if now < self._bind_next:
            return
        try:
            with self._store() as store:
                found = caching.namespace(self.cfg, store)
        except Problem:
            self._bind_next = now + 5.0
            if self.redis.cache is None:
                raise
            return  # Postgres is away: keep the namespace known, and answer from the cache
        self._bind_next = now + (60.0 if found is not None else 5.0)
        if found is not None and (self.redis.cache is None or self.redis.cache.namespace != found):
            log.info("profile cache", namespace=found)  # the daemon logs the same
        self.redis.bind(found)

    def _counted(self, doc: dict[str, Any] | None) -> dict[str, Any] | None:
        """One lookup result a request: hit, miss, or unavailable (Redis skipped or failing)."""
        if self.redis.cache is not None:
            result = "hit" if doc is not None else "unavailable" if self.redis.skipping() else "miss"
            self.metrics.cache.labels(result).inc()
        return doc

    def _cached(self, profile_id: int) -> dict[str, Any] | None:
        raw = self.redis.call(ProfileCache.get, profile_id)
        return None if raw is None else dict(orjson.loads(raw))

    def _resolve(self, profile_id: int | None = None, identifier: tuple[str, str] | None = None,
                 live_only: bool = False) -> int | None:
        with self._store() as store:
            return store.resolve(profile_id=profile_id, identifier=identifier, live_only=live_only)

    def _document(self, profile_id: int) -> dict[str, Any] | None:
        with self._store() as store:
            mark = store.freshness_mark(profile_id)
            rows = store.document_rows(profile_id)
        if rows.profile is None or mark is None or mark[1] is not None:
            return None if mark is None or mark[1] is None else self._document(int(mark[1]))  # merged
        doc = sendtime.document(profile_document(rows.profile, rows.aliases, rows.identifiers, rows.fields,
                                                 rows.entities), self.shape)
        self.redis.call(ProfileCache.put, doc["id"], orjson.dumps(doc))
        # The daemon may have committed a change between the read and the write above, and
        # dropped the entry before it was written: read the mark again, and drop the entry
        # if it moved (a change committed after this read drops it itself).
        try:
            with self._store() as store:
                moved = store.freshness_mark(profile_id) != mark
        except Problem:
            self._drop(doc["id"])  # not known whether it moved: the next request reads it again
            raise
        if moved:
            self._drop(doc["id"])
        return doc

    def _drop(self, profile_id: int) -> None:
        """Delete an entry this process may have written stale, whether or not Redis is being
        skipped: nothing would retry it."""
        cache = self.redis.cache
        if cache is None:
            return
        try:
            cache.delete([profile_id])
        except TransientError as exc:
            log.error("a document written as its profile changed stays cached until its TTL: Redis"
                      " refused its delete", profile=profile_id, ttl_seconds=cache.ttl, error=str(exc))

    @contextmanager
    def _store(self) -> Iterator[store_mod.ProfileStore]:
        try:
            with store_mod.pooled(self.pool, self.cfg.mapping.aggregates) as store:
                yield store
        except TransientError as exc:
            raise Problem(503, "Store unavailable", "the profile store cannot be reached now; retry",
                          {"Retry-After": "5"}) from exc

    def history(self, requested: int, limit: int) -> list[dict[str, Any]] | None:
        with self._store() as store:
            survivor = store.resolve(profile_id=requested)
            if survivor is None:
                return None
            return [history_document(r) for r in store.history(survivor, None, limit)]

    def ready(self) -> tuple[bool, str]:
        try:
            with store_mod.pooled(self.pool, self.cfg.mapping.aggregates, timeout_s=0.5) as store:
                store.resolve(profile_id=0)
        except Exception as exc:  # any failure here means not ready, and says why
            return False, f"postgres: {type(exc).__name__}"
        return True, "postgres reachable"


class Tokens:
    """Bearer tokens against their configured hashes; a token checked once is remembered by
    its own hash, so a request costs one SHA-256, not one per configured token."""

    def __init__(self, cfg: Config) -> None:
        self._configured = [(name, t.hash, frozenset(t.scopes)) for name, t in cfg.api.tokens.items()]
        self._known: dict[str, tuple[str, frozenset[str]] | None] = {}
        self._lock = threading.Lock()

    def scopes(self, token: str) -> tuple[str, frozenset[str]] | None:
        key = tokens.hash_token(token, "lookup")
        with self._lock:
            if key in self._known:
                return self._known[key]
        found = next(((name, scopes) for name, stored, scopes in self._configured
                      if tokens.matches(token, stored)), None)
        with self._lock:
            if len(self._known) > 10_000:
                self._known.clear()  # a flood of wrong tokens must not grow memory
            self._known[key] = found
        return found


def require(scope: str) -> Callable[[Request], str]:
    """A dependency: the request's bearer token must hold `scope` (or admin). Returns its name."""

    def check(request: Request) -> str:
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise Problem(401, "Unauthorized", "send a bearer token: Authorization: Bearer <token>",
                          {"WWW-Authenticate": 'Bearer realm="cdc-sync"'})
        found = request.app.state.tokens.scopes(token.strip())
        if found is None:
            raise Problem(401, "Unauthorized", "the token is not known",
                          {"WWW-Authenticate": 'Bearer realm="cdc-sync", error="invalid_token"'})
        name: str = found[0]
        if not tokens.allows(found[1], scope):
            raise Problem(403, "Forbidden", f"the token lacks the scope {scope}",
                          {"WWW-Authenticate": f'Bearer realm="cdc-sync", error="insufficient_scope", '
                                               f'scope="{scope}"'})
        return name

    return check


def _answer(doc: dict[str, Any] | None, requested: int | None = None) -> Response:
    if doc is None:
        raise Problem(404, "Not Found", "no profile matches")
    body = sendtime.served(doc, datetime.now(UTC))
    headers = {"Cache-Control": "no-store"}
    if requested is not None and doc["id"] != requested:
        headers["Content-Location"] = f"/v1/profiles/{doc['id']}"
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


DOCUMENT = {"description": "The profile's send-time document", "content": {"application/json": {"example": {
    "id": 42, "aliases": [17], "identifiers": {"email": ["ann@example.com"]},
    "attributes": {"first_name": "Ann", "consent_email_marketing": True},
    "consent": {"consent_email_marketing": True},
    "cart": {"id": "c-9", "status": "open", "items": [{"id": "i-1", "product_id": "p-1", "quantity": 2}]},
    "orders": [{"id": "o-3", "status": "paid", "total": "59.90"}],
    "aggregates": {"orders_count": 3},
    "freshness": {"source_commit_at": "2026-12-01T10:00:00+00:00", "age_seconds": 4.2},
    "updated_at": "2026-12-01T10:00:01+00:00"}}}}
PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"description": why, "content": {PROBLEM: {"example": {
        "type": "about:blank", "title": title, "status": status, "detail": why}}}}
    for status, title, why in [(401, "Unauthorized", "no bearer token, or an unknown one"),
                               (403, "Forbidden", "the token lacks the scope profiles:read"),
                               (404, "Not Found", "no profile matches"),
                               (503, "Store unavailable", "the profile store cannot be reached now")]}


def create_app(cfg: Config, open_pool: bool = True) -> FastAPI:
    """The API for a configuration. `open_pool` False builds it without touching Postgres (to
    print the OpenAPI document)."""
    metrics = Metrics()
    pool = store_mod.pool(cfg.store.dsn, cfg.api.pool_size)
    profiles = Profiles(cfg, pool, Redis(cfg.redis.url, cfg.redis.ttl_seconds), metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if open_pool:
            pool.open(wait=False)  # Postgres may come later: requests meanwhile answer 503
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(title="cdc-sync send-time profile API", version=__version__, lifespan=lifespan,
                  description=__doc__)
    app.state.tokens = Tokens(cfg)
    app.state.profiles = profiles
    app.state.metrics = metrics
    _handlers(app, metrics)
    _profile_routes(app, profiles)
    _operation_routes(app, profiles, metrics)
    app.openapi = partial(_openapi, app)  # type: ignore[method-assign]
    return app


class _Measured:
    """Counts and times every request by route template (a plain ASGI middleware: Starlette's
    BaseHTTPMiddleware costs a task and a stream a request)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)
            self.metrics.requests.labels(path, str(status[0])).inc()


def _handlers(app: FastAPI, metrics: Metrics) -> None:
    app.add_middleware(_Measured, metrics=metrics)

    @app.exception_handler(Problem)
    async def on_problem(_: Request, exc: Problem) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors())
        return problem(400, "Bad Request", where)  # the locations and reasons, never the values sent


def _profile_routes(app: FastAPI, profiles: Profiles) -> None:
    read = [Depends(require("profiles:read"))]

    @app.get("/v1/profiles/{profile_id}", responses={200: DOCUMENT, **PROBLEMS}, tags=["profiles"],
             summary="A profile by id (a merged id answers with its survivor)", dependencies=read)
    def get_profile(profile_id: int) -> Response:
        return _answer(profiles.by_id(profile_id), profile_id)

    @app.get("/v1/profiles", responses={200: DOCUMENT, **{**PROBLEMS, 400: {"description": "no identifier"}}},
             tags=["profiles"], summary="A profile by identifier: ?identifier=TYPE:VALUE or ?email=",
             dependencies=read)
    def find_profile(identifier: Annotated[str | None,
                                           Query(description="TYPE:VALUE, e.g. email:ann@example.com")]
                     = None,
                     email: Annotated[str | None, Query(description="the same as identifier=email:VALUE")]
                     = None) -> Response:
        if (identifier is None) == (email is None):
            raise Problem(400, "Bad Request", "give one of identifier=TYPE:VALUE or email=VALUE")
        kind, sep, value = (identifier.partition(":") if identifier is not None
                            else ("email", ":", email or ""))
        if not sep or not kind or not value:
            raise Problem(400, "Bad Request", "identifier wants TYPE:VALUE")
        return _answer(profiles.by_identifier(*profiles.normalized(kind, value)))

    @app.get("/v1/profiles/{profile_id}/history", tags=["profiles"], dependencies=[Depends(require("admin"))],
             summary="A profile's applied changes, newest first (admin: it holds past values)",
             responses={k: v for k, v in PROBLEMS.items() if k != 403} | {403: {
                 "description": "the token lacks the scope admin", "content": {PROBLEM: {}}}})
    def get_history(profile_id: int,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> Response:
        rows = profiles.history(profile_id, limit)
        if rows is None:
            raise Problem(404, "Not Found", "no profile matches")
        return Response(orjson.dumps(rows), media_type="application/json",
                        headers={"Cache-Control": "no-store"})


def _operation_routes(app: FastAPI, profiles: Profiles, metrics: Metrics) -> None:
    @app.get("/healthz", tags=["operations"], summary="Alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Ready: the profile store answers",
             responses={503: {"description": "not ready, and why"}})
    def readyz() -> Response:
        ok, why = profiles.ready()
        with contextlib.suppress(Problem):  # so that `cache` says what a request would find
            profiles.bind()
        cache = profiles.redis.cache
        return JSONResponse({"status": "ok" if ok else "unavailable", "store": why,
                             "cache": profiles.redis.state(),
                             "cache_namespace": None if cache is None else cache.namespace},
                            status_code=200 if ok else 503)

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)



def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, less its 422 answers: a parameter that is not valid answers 400 here."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)
        for path in doc["paths"].values():
            for op in path.values():
                if op.get("responses", {}).pop("422", None) is not None:
                    op["responses"].setdefault("400", {"description": "a parameter is not valid",
                                                       "content": {PROBLEM: {}}})
        for name in ("HTTPValidationError", "ValidationError"):
            doc.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = doc
    return app.openapi_schema


def openapi_document(cfg: Config) -> dict[str, Any]:
    return dict(create_app(cfg, open_pool=False).openapi())


CONFIG_ENV = "CDC_SYNC_API_CONFIG"  # the config file a worker process reads (see serve)


def app_from_env() -> FastAPI:
    """The app of a uvicorn worker process: the config named by $CDC_SYNC_API_CONFIG."""
    from cdc_sync import logs, settings

    logs.configure(os.environ.get("CDC_SYNC_API_LOG_LEVEL", "INFO"),
                   json=os.environ.get("CDC_SYNC_API_LOG_JSON") == "1")
    path = os.environ.get(CONFIG_ENV)
    return create_app(settings.load(Path(path) if path else None))


def serve(cfg: Config, config_path: Path | None, host: str | None = None, port: int | None = None,
          workers: int = 1, log_level: str = "INFO", log_json: bool = False) -> None:
    """Serve until SIGTERM. With several workers, each is a process of its own that reads the
    config file again (uvicorn's supervisor restarts one that dies)."""
    import uvicorn

    host, port = host or cfg.api.host, port or cfg.api.port
    log.info("api listening", host=host, port=port, workers=workers, tokens=len(cfg.api.tokens))
    if not cfg.api.tokens:
        log.warning("no API tokens configured: every profile request is refused (see `cdc-sync api token`)")
    common: dict[str, Any] = {"host": host, "port": port, "log_config": None, "access_log": False,
                              "server_header": False, "timeout_graceful_shutdown": 10}
    with _metrics_files(workers > 1):
        if workers == 1:
            uvicorn.run(create_app(cfg), **common)
            return
        os.environ[CONFIG_ENV] = str(config_path or "")
        os.environ.setdefault("CDC_SYNC_API_LOG_LEVEL", log_level)
        os.environ.setdefault("CDC_SYNC_API_LOG_JSON", "1" if log_json else "0")
        uvicorn.run("cdc_sync.services.api:app_from_env", factory=True, workers=workers, **common)


@contextmanager
def _metrics_files(needed: bool) -> Iterator[None]:
    """A directory for the workers' metric files, empty at start (prometheus-client's rule): the
    one $PROMETHEUS_MULTIPROC_DIR names, else (if `needed`) a temporary one removed at the end.
    The workers, started after this, read it when they import prometheus-client."""
    given = os.environ.get(MULTIPROC_ENV)
    if not given and not needed:
        yield
        return
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="cdc-sync-api-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(path, ignore_errors=True)
