"""OpenAI's Batch API: a JSONL file of Chat Completions requests, one batch per file."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, Final, Literal

import openai
from openai.types.chat import ChatCompletion

from workers.batch.protocol import BatchState, LineResult
from workers.errors import ProviderError
from workers.models import ModelSpec
from workers.providers.classify import from_status
from workers.providers.openai import call, completion_of, request_body

ENDPOINT: Final[Literal["/v1/chat/completions"]] = "/v1/chat/completions"
ENDED = {"completed", "failed", "expired", "cancelled"}
# How far back before our create attempt the batch list is searched (clock skew).
FIND_SLACK_SECONDS = 300


class OpenAIBatches:
    """SDK retries are off: a create that timed out may have succeeded, and is looked for
    (``find``) before it is made again."""

    def __init__(self, spec: ModelSpec, *, api_key: str, base_url: str | None) -> None:
        self.spec = spec
        self.client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=300)

    def create(self, bid: str, requests: Sequence[tuple[str, str]]) -> str:
        lines = (
            json.dumps(
                {
                    "custom_id": custom,
                    "method": "POST",
                    "url": ENDPOINT,
                    "body": request_body(self.spec, prompt),
                },
                ensure_ascii=False,
            )
            for custom, prompt in requests
        )
        data = ("\n".join(lines) + "\n").encode()
        upload = call(
            lambda: self.client.files.create(file=(f"ibt-{bid}.jsonl", data), purpose="batch")
        )
        batch = call(
            lambda: self.client.batches.create(
                input_file_id=upload.id,
                endpoint=ENDPOINT,
                completion_window="24h",
                metadata={"ibt_batch": bid},
            )
        )
        return batch.id

    def find(self, bid: str, since: float, count: int) -> str | None:
        for batch in call(lambda: self.client.batches.list(limit=100)):
            if (batch.metadata or {}).get("ibt_batch") == bid:
                return batch.id
            if batch.created_at < since - FIND_SLACK_SECONDS:
                return None
        return None

    def state(self, provider_id: str) -> BatchState:
        batch = call(lambda: self.client.batches.retrieve(provider_id))
        counts = batch.request_counts
        errors: tuple[tuple[str, str], ...] = ()
        if batch.errors and batch.errors.data:
            errors = tuple((e.code or "error", e.message or "") for e in batch.errors.data)
        return BatchState(
            status=batch.status,
            ended=batch.status in ENDED,
            counts=(
                {"total": counts.total, "completed": counts.completed, "failed": counts.failed}
                if counts
                else {}
            ),
            failed=batch.status == "failed",
            errors=errors,
        )

    def cancel(self, provider_id: str) -> None:
        call(lambda: self.client.batches.cancel(provider_id))

    def results(self, provider_id: str) -> Iterator[LineResult]:
        batch = call(lambda: self.client.batches.retrieve(provider_id))
        # Every request of a completed batch that failed lands in the error file, and
        # output_file_id is null when none succeeded.
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for line in self._download(file_id).splitlines():
                if line.strip():
                    yield self.line_result(json.loads(line))

    def _download(self, file_id: str) -> str:
        return call(lambda: self.client.files.content(file_id)).text

    def line_result(self, row: dict[str, Any]) -> LineResult:
        custom = str(row.get("custom_id", ""))
        response = row.get("response")
        if isinstance(response, dict) and response.get("status_code") == 200:
            completion = ChatCompletion.model_validate(response.get("body") or {})
            return LineResult(custom, completion=completion_of(self.spec, completion))
        if isinstance(response, dict):
            body: dict[str, Any] = response.get("body") or {}
            if not isinstance(body, dict):
                body = {}
            error: dict[str, Any] = body.get("error") or {}
            if not isinstance(error, dict):
                error = {}
            message = str(error.get("message") or body or "no error body")
            code = error.get("code") if isinstance(error.get("code"), str) else None
            status = int(response.get("status_code") or 500)
            return LineResult(custom, error=from_status(status, message, None, code))
        failure: dict[str, Any] = row.get("error") or {}
        if not isinstance(failure, dict):
            failure = {}
        code = str(failure.get("code") or "error")
        message = str(failure.get("message") or "the request did not run")
        expired = code == "batch_expired"
        return LineResult(
            custom,
            error=ProviderError(
                f"{code}: {message}"[:500],
                kind="expired" if expired else "batch",
                retryable=expired,
            ),
        )
