"""The front door: ``Gateway``, the ingress deployment (FastAPI) in front of the model replicas.

It authenticates the tenant, bounds the body, checks the inputs, and only then sends the
request's parts to the `Classifier` replicas; a refused request never reaches a model replica.
Parts whose replica dies are sent again (classification has no side effects) up to
``RETRIES`` times within the request's deadline; past that the answer is a JSON 503.
"""

# No `from __future__ import annotations`: FastAPI reads the route parameters' types at runtime.
import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter
from starlette.exceptions import HTTPException

from servable import ServingSpec
from serving.batching import PartResult, split_request
from serving.inputs import BadRequest, Input, parse_inputs
from serving.keys import TenantKeys
from serving.stats import ServingStats
from storage.urls import is_loopback_host

RETRIES = 2
REPLICA_LOST = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)
_logger = logging.getLogger("ray.serve")

api = FastAPI(title="prumux-search serve", docs_url=None, redoc_url=None, openapi_url=None)


@api.exception_handler(HTTPException)
async def _json_http_error(request: Request, error: HTTPException) -> JSONResponse:
    return JSONResponse({"error": str(error.detail)}, status_code=error.status_code)


@dataclass(frozen=True)
class Limits:
    """What one request may hold and how long it may take."""

    max_batch: int  # instances per part: a part fits one batch
    max_body_bytes: int = 1 << 20
    max_inputs: int = 1024
    request_timeout_s: float = 30.0


class ReplicaLost(Exception):
    """A part's replica died on every try."""


@serve.deployment(name="Gateway", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024)
@serve.ingress(api)
class Gateway:
    """Authentication, limits and input checks; splits requests into parts for the model replicas."""

    def __init__(
        self, classifier: DeploymentHandle, spec: dict[str, Any], digests: dict[str, str] | None, limits: dict[str, Any]
    ) -> None:
        self.classifier = classifier
        self.spec = ServingSpec.from_dict(spec)
        self.keys = TenantKeys(digests)
        self.limits = Limits(**limits)
        self.stats = ServingStats(self.spec.N)
        self.requests_metric = Counter(
            "prumux_requests", "Answered classify requests, per tenant and status.", tag_keys=("tenant", "status")
        )

    @api.post("/v1/classify")
    async def classify(self, request: Request) -> JSONResponse:
        started = time.monotonic()
        tenant = "-"
        try:
            tenant = self._tenant(request)
            inputs = parse_inputs(await self._body(request), self.limits.max_inputs)
            answer = await self._answer(tenant, inputs)
        except BadRequest as refused:
            return self._refuse(refused.status, str(refused), tenant)
        except (TimeoutError, ReplicaLost):
            return self._refuse(503, "no model replica answered in time (a replica restarting?); retry", tenant)
        except Exception as error:  # a failure in a replica: answer it, keep serving
            _logger.exception("classify failed")
            return self._refuse(500, f"internal error: {type(error).__name__}", tenant)
        self.stats.record_request(tenant, len(inputs), len(answer["truncated"]), time.monotonic() - started)
        self.requests_metric.inc(tags={"tenant": tenant, "status": "200"})
        return JSONResponse(answer)

    @api.get("/v1/health")
    async def health(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "status": "ok",
            "model": {
                "N": spec.N,
                "s": spec.s,
                "task": spec.task,
                "labels": list(spec.label_names),
                "seq_len": spec.seq_len,
                "base_model": spec.base_model,
            },
            "auth": "none (one tenant, loopback only)" if self.keys.open else "api keys",
        }

    @api.get("/v1/stats")
    async def statistics(self, request: Request) -> JSONResponse:
        try:
            tenant = self._tenant(request)
        except BadRequest as refused:
            return self._refuse(refused.status, str(refused), "-")
        figures = self.stats.to_dict()
        if not self.keys.open:  # a tenant sees its own counts only
            figures["tenants"] = {name: counts for name, counts in figures["tenants"].items() if name == tenant}
        figures["model"] = {"N": self.spec.N, "s": self.spec.s}
        figures["limits"] = vars(self.limits)
        return JSONResponse(figures)

    def _tenant(self, request: Request) -> str:
        if self.keys.open and not is_loopback_host(request.client.host if request.client else ""):
            raise BadRequest(403, "this server has no API keys and answers loopback clients only")
        tenant = self.keys.tenant_for(request.headers.get("authorization"))
        if tenant is None:
            raise BadRequest(401, "missing or unknown API key (Authorization: Bearer KEY)")
        return tenant

    async def _body(self, request: Request) -> bytes:
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BadRequest(413, f"the body has {declared} bytes; the limit is {limit}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise BadRequest(413, f"the body is over the limit of {limit} bytes")
        return bytes(body)

    async def _answer(self, tenant: str, inputs: list[Input]) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        parts = split_request(tenant, request_id, inputs, self.limits.max_batch)
        calls = asyncio.gather(*(self._call(part) for part in parts))
        results: list[PartResult] = await asyncio.wait_for(calls, self.limits.request_timeout_s)
        scores = [row for result in results for row in result.scores]
        truncated = [index for index, cut in enumerate(flag for r in results for flag in r.truncated) if cut]
        names = self.spec.label_names
        answer: dict[str, Any] = {
            "labels": [names[max(range(len(row)), key=row.__getitem__)] for row in scores],
            "scores": scores,
            "model": {"N": self.spec.N, "s": self.spec.s},
            "truncated": truncated,
            "request_id": request_id,
        }
        if truncated:
            answer["warning"] = f"inputs {truncated} are longer than {self.spec.seq_len} tokens and were truncated"
        return answer

    async def _call(self, part: Any) -> PartResult:
        tries = 0
        while True:
            try:
                result: PartResult = await self.classifier.classify.remote(part)
                break
            except REPLICA_LOST:
                tries += 1
                if tries > RETRIES:
                    raise ReplicaLost from None
                self.stats.retried_parts += 1
        if result.report is not None:
            self.stats.record_batch(result.report)
        return result

    def _refuse(self, status: int, message: str, tenant: str) -> JSONResponse:
        self.stats.record_refusal(status)
        self.requests_metric.inc(tags={"tenant": tenant, "status": str(status)})
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)
