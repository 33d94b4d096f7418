"""The providers' batch APIs on the simulator: OpenAI Files + Batches, Anthropic Message Batches.

They follow the real wire formats, so the official SDKs' batch resources run unchanged against
them. Processing is lazy: every request works out which lines are due by now (line i of n is due
``batch_latency * (i + 1) / n`` seconds after creation) and judges them with the sync endpoint's
own code, each as of its due time. No background task runs, so what a batch holds depends on the
clock and the knobs only, never on how often somebody polls.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

if TYPE_CHECKING:
    from producer.simulator import Simulator, Verdict

OPENAI_ENDPOINTS = ("/v1/chat/completions",)  # the only one the simulator can judge
OPENAI_MAX_LINES = 50_000
OPENAI_MAX_BATCH_BYTES = 200 * 1024 * 1024
OPENAI_MAX_FILE_BYTES = 512 * 1024 * 1024
OPENAI_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data")
ANTHROPIC_MAX_REQUESTS = 100_000
ANTHROPIC_MAX_BYTES = 256 * 1024 * 1024
WINDOW = 24 * 3600  # both providers give a batch 24 hours
MAX_REPORTED_ERRORS = 1000  # keeps a failed batch object small when every line is wrong
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


def _hex() -> str:
    return uuid.uuid4().hex[:24]


def _rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _seconds(t: float | None) -> int | None:
    return None if t is None else int(t)


def _line_error(code: str, message: str, param: str | None = None, line: int | None = None) -> Any:
    return {"code": code, "message": message, "param": param, "line": line}


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: float

    def object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


@dataclass
class Line:
    custom_id: str
    body: dict[str, Any]  # the chat body (OpenAI) or the message params (Anthropic)
    due: float
    verdict: Verdict | None = None
    id: str = ""  # OpenAI's batch_req_... (set when judged)
    request_id: str = ""


@dataclass
class Batch:
    """One batch of either protocol; ``outcome`` is set once it has ended."""

    id: str
    protocol: str
    model: str
    created_at: float
    lines: list[Line]
    run_limit: int  # lines run before it expires (len(lines) when it never does)
    metadata: dict[str, Any] | None = None
    endpoint: str = ""
    input_file_id: str = ""
    tokens: int = 0
    judged: int = 0  # lines[:judged] have verdicts (lines complete in order)
    succeeded: int = 0  # running totals, so polling a big batch stays cheap
    input_tokens: int = 0
    output_tokens: int = 0
    cancel_at: float | None = None
    cancel_done_at: float | None = None
    ended_at: float | None = None
    outcome: str | None = None  # completed, expired, cancelled or failed
    errors: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None

    def counts(self) -> dict[str, int]:
        """What became of each line so far (the simulator's view, for /_sim/stats)."""
        rest = len(self.lines) - self.judged
        return {
            "succeeded": self.succeeded,
            "failed": self.judged - self.succeeded,
            "pending": rest if self.outcome is None else 0,
            "cancelled": rest if self.outcome == "cancelled" else 0,
            "expired": rest if self.outcome == "expired" else 0,
        }

    def openai_status(self) -> str:
        if self.outcome is not None:
            return self.outcome
        return "cancelling" if self.cancel_at is not None else "in_progress"

    def anthropic_status(self) -> str:
        if self.outcome is not None:
            return "ended"
        return "canceling" if self.cancel_at is not None else "in_progress"


class BatchApi:
    """Routes and state of both batch APIs; batches and files live until /_sim/reset."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}  # in creation order

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/v1/files", self.create_file)
        router.add_get("/v1/files", self.list_files)
        router.add_get("/v1/files/{file_id}", self.retrieve_file)
        router.add_get("/v1/files/{file_id}/content", self.file_content)
        router.add_delete("/v1/files/{file_id}", self.delete_file)
        router.add_post("/v1/batches", self.create_batch)
        router.add_get("/v1/batches", self.list_batches)
        router.add_get("/v1/batches/{batch_id}", self.retrieve_batch)
        router.add_post("/v1/batches/{batch_id}/cancel", self.cancel_batch)
        router.add_post("/v1/messages/batches", self.create_message_batch)
        router.add_get("/v1/messages/batches", self.list_message_batches)
        router.add_get("/v1/messages/batches/{batch_id}", self.retrieve_message_batch)
        router.add_delete("/v1/messages/batches/{batch_id}", self.delete_message_batch)
        router.add_post("/v1/messages/batches/{batch_id}/cancel", self.cancel_message_batch)
        router.add_get("/v1/messages/batches/{batch_id}/results", self.message_batch_results)

    def reset(self) -> None:
        self.files.clear()
        self.batches.clear()

    def summary(self) -> list[dict[str, Any]]:
        """The batches as /_sim/stats lists them, brought up to date first."""
        self._tick()
        return [
            {
                "id": b.id,
                "protocol": b.protocol,
                "model": b.model,
                "status": b.openai_status() if b.protocol == "openai" else b.anthropic_status(),
                "created_at": b.created_at,
                "n": len(b.lines),
                "metadata": b.metadata,
                "counts": b.counts(),
            }
            for b in self.batches.values()
        ]

    # -- processing --------------------------------------------------------------------------

    def _tick(self) -> None:
        """Bring every batch still running up to now, as the provider would have by now."""
        now = time.time()
        for batch in self.batches.values():
            if batch.outcome is None:
                self._advance(batch, now)

    def _advance(self, batch: Batch, now: float) -> None:
        horizon = now if batch.cancel_at is None else min(now, batch.cancel_at)
        while batch.judged < batch.run_limit and batch.lines[batch.judged].due <= horizon:
            self._run(batch, batch.lines[batch.judged])
            batch.judged += 1
        if batch.judged == batch.run_limit:
            if batch.run_limit < len(batch.lines):
                last = batch.lines[batch.run_limit - 1].due if batch.run_limit else batch.created_at
                self._end(batch, "expired", last)
            else:
                self._end(batch, "completed", batch.lines[-1].due)
        elif batch.cancel_done_at is not None and now >= batch.cancel_done_at:
            self._end(batch, "cancelled", batch.cancel_done_at)

    def _run(self, batch: Batch, line: Line) -> None:
        from producer.simulator import usage_of

        """Judge (and bill) one line as the sync endpoint would have, at the line's due time."""
        sim = self.sim
        call = sim.parse(batch.protocol, line.body)
        if not call.model or not isinstance(line.body.get("messages"), list):
            verdict = call.error(400, "params: 'model' and 'messages' are required")
        else:
            verdict = sim.unsupported(call) or sim.judge(
                call, now=line.due, batch_fault=sim.state.knobs.batch_fault
            )
        line.verdict = verdict
        line.id = f"batch_req_{_hex()}"
        line.request_id = f"req_{_hex()}"
        sim.state.batch_log.append(
            {
                "t": line.due,
                "batch": batch.id,
                "protocol": batch.protocol,
                "model": call.model,
                "key": call.key,
                "custom_id": line.custom_id,
                "status": verdict.status,
            }
        )
        if verdict.status == 200:
            sim.state.pay("batch", call.key)
            batch.succeeded += 1
            used_in, used_out = usage_of(verdict.body)
            sim.state.batch_log[-1].update({"in": used_in, "out": used_out})
            batch.input_tokens += used_in
            batch.output_tokens += used_out

    def _end(self, batch: Batch, outcome: str, at: float) -> None:
        batch.outcome = outcome
        batch.ended_at = at
        if batch.protocol == "openai":
            self._write_outputs(batch)

    def _write_outputs(self, batch: Batch) -> None:
        """OpenAI's output and error files; lines a cancel kept from running go in neither."""
        out: list[dict[str, Any]] = []
        err: list[dict[str, Any]] = []
        for line in batch.lines:
            if line.verdict is not None:
                verdict = line.verdict
                record: dict[str, Any] = {
                    "id": line.id,
                    "custom_id": line.custom_id,
                    "response": {
                        "status_code": verdict.status,
                        "request_id": line.request_id,
                        "body": verdict.body,
                    },
                    "error": None,
                }
                (out if verdict.status == 200 else err).append(record)
            elif batch.outcome == "expired":
                err.append(
                    {
                        "id": f"batch_req_{_hex()}",
                        "custom_id": line.custom_id,
                        "response": None,
                        "error": {"code": "batch_expired", "message": _EXPIRED_MESSAGE},
                    }
                )
        if out:
            batch.output_file_id = self._store_output(batch, "output", out)
        if err:
            batch.error_file_id = self._store_output(batch, "error", err)

    def _store_output(self, batch: Batch, kind: str, records: list[dict[str, Any]]) -> str:
        data = "".join(json.dumps(r) + "\n" for r in records).encode()
        stored = StoredFile(
            f"file-{_hex()}", f"{batch.id}_{kind}.jsonl", "batch_output", data, time.time()
        )
        self.files[stored.id] = stored
        return stored.id

    async def _hold(self, kind: str, seconds: float) -> None:
        """Hold a request at its riskiest moment, visibly in /_sim/stats, for crash tests."""
        if seconds <= 0:
            return
        holding = self.sim.state.holding
        holding[kind] += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            holding[kind] -= 1

    def _denied(self, request: web.Request, protocol: str) -> web.Response | None:
        if self.sim.authorized(request, protocol):
            return None
        return self.sim.error_response(protocol, 401, "invalid api key (simulated)")

    # -- OpenAI files ------------------------------------------------------------------------

    async def create_file(self, request: web.Request) -> web.Response:
        """Store an upload. The hold comes first: a client killed meanwhile leaves no file."""
        if denied := self._denied(request, "openai"):
            return denied
        fields: dict[str, str] = {}
        data: bytes | None = None
        filename = "upload"
        try:
            reader = await request.clone(client_max_size=OPENAI_MAX_FILE_BYTES).multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                if part.name == "file":
                    data = bytes(await part.read())
                    filename = part.filename or filename
                else:
                    fields[part.name] = await part.text()
        except web.HTTPRequestEntityTooLarge:
            return self.sim.error_response("openai", 413, "the file exceeds 512 MB (simulated)")
        except (ValueError, AssertionError, KeyError):
            return self.sim.error_response("openai", 400, "expected a multipart/form-data body")
        purpose = fields.get("purpose", "")
        if data is None:
            return self.sim.error_response("openai", 400, "Missing required parameter: 'file'.")
        if purpose not in OPENAI_PURPOSES:
            return self.sim.error_response(
                "openai", 400, f"Invalid value for 'purpose': {purpose!r}"
            )
        await self._hold("file_create", self.sim.state.knobs.hold_file_create)
        if request.transport is None or request.transport.is_closing():
            return web.Response(status=499)  # the client gave up: the upload never completed
        stored = StoredFile(f"file-{_hex()}", filename, purpose, data, time.time())
        self.files[stored.id] = stored
        return web.json_response(stored.object())

    async def list_files(self, request: web.Request) -> web.Response:
        if denied := self._denied(request, "openai"):
            return denied
        self._tick()
        purpose = request.query.get("purpose")
        files = [f for f in self.files.values() if purpose is None or f.purpose == purpose]
        if request.query.get("order", "desc") == "desc":
            files.reverse()
        page, has_more = _after(files, request.query.get("after"), request.query, 10_000)
        return web.json_response(_list_page([f.object() for f in page], has_more))

    def _file(self, request: web.Request) -> StoredFile | web.Response:
        file_id = request.match_info["file_id"]
        stored = self.files.get(file_id)
        if stored is None:
            return self.sim.error_response("openai", 404, f"No such File object: {file_id}")
        return stored

    async def retrieve_file(self, request: web.Request) -> web.Response:
        if denied := self._denied(request, "openai"):
            return denied
        self._tick()
        stored = self._file(request)
        return stored if isinstance(stored, web.Response) else web.json_response(stored.object())

    async def file_content(self, request: web.Request) -> web.Response:
        """A file's bytes; an output file's wait out hold_results first (a crash-test window)."""
        if denied := self._denied(request, "openai"):
            return denied
        self._tick()
        stored = self._file(request)
        if isinstance(stored, web.Response):
            return stored
        if stored.purpose == "batch_output":
            await self._hold("results", self.sim.state.knobs.hold_results)
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def delete_file(self, request: web.Request) -> web.Response:
        if denied := self._denied(request, "openai"):
            return denied
        stored = self._file(request)
        if isinstance(stored, web.Response):
            return stored
        del self.files[stored.id]
        return web.json_response({"id": stored.id, "object": "file", "deleted": True})

    # -- OpenAI batches ----------------------------------------------------------------------

    async def create_batch(self, request: web.Request) -> web.Response:
        """Create a batch; a bad input file gives a ``failed`` batch, as OpenAI's validation does.

        hold_batch_create holds the answer after the batch exists: the provider has it (and
        will bill it) but the caller has not seen its id.
        """
        if denied := self._denied(request, "openai"):
            return denied
        try:
            body = await request.json()
        except ValueError:
            return self.sim.error_response("openai", 400, "the body is not valid JSON")
        if not isinstance(body, dict):
            return self.sim.error_response("openai", 400, "the body must be a JSON object")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                return self.sim.error_response(
                    "openai", 400, f"Missing required parameter: '{name}'."
                )
        endpoint = body["endpoint"]
        if endpoint not in OPENAI_ENDPOINTS:
            return self.sim.error_response(
                "openai",
                400,
                f"Invalid value for 'endpoint': the simulator serves {OPENAI_ENDPOINTS}",
            )
        if body["completion_window"] != "24h":
            return self.sim.error_response(
                "openai", 400, "Invalid value for 'completion_window': only '24h' is supported."
            )
        metadata = body.get("metadata")
        if metadata is not None and not _valid_metadata(metadata):
            return self.sim.error_response(
                "openai",
                400,
                "Invalid 'metadata': at most 16 string pairs (keys <= 64 chars, "
                "values <= 512 chars).",
            )
        stored = self.files.get(body["input_file_id"])
        if stored is None or stored.purpose != "batch":
            return self.sim.error_response(
                "openai",
                400,
                f"Invalid 'input_file_id': {body['input_file_id']!r} is not a file uploaded "
                "with purpose 'batch'.",
            )
        self._tick()
        knobs = self.sim.state.knobs
        now = time.time()
        requests, model, errors = _read_openai_lines(stored.data, endpoint)
        if knobs.batch_fail_validation:
            code, knobs.batch_fail_validation = knobs.batch_fail_validation, None
            errors = [_line_error(code, f"simulated validation failure: {code}")]
        tokens = sum(len(self.sim.prompt_text(b)) // 4 for _, b in requests)
        if not errors and knobs.batch_token_limit > 0:
            enqueued = sum(
                b.tokens
                for b in self.batches.values()
                if b.protocol == "openai" and b.model == model and b.outcome is None
            )
            if enqueued + tokens > knobs.batch_token_limit:
                errors = [
                    _line_error(
                        "token_limit_exceeded",
                        f"Enqueued token limit reached for {model} in organization "
                        f"org-simulated. Limit: {knobs.batch_token_limit:,} enqueued tokens. "
                        "Please try again once some in_progress batches have been completed.",
                    )
                ]
        batch = self._new_batch(
            "openai", f"batch_{_hex()}", model, [] if errors else requests, now, metadata
        )
        batch.endpoint = endpoint
        batch.input_file_id = stored.id
        if errors:
            batch.errors = errors[:MAX_REPORTED_ERRORS]
            batch.outcome = "failed"
            batch.ended_at = now
        else:
            batch.tokens = tokens
        await self._hold("batch_create", knobs.hold_batch_create)
        # Answered as OpenAI answers a create: still validating, unless validation failed.
        return web.json_response(self._openai_batch(batch, validating=not errors))

    def _new_batch(
        self,
        protocol: str,
        batch_id: str,
        model: str,
        requests: list[tuple[str, dict[str, Any]]],
        now: float,
        metadata: dict[str, Any] | None,
    ) -> Batch:
        knobs = self.sim.state.knobs
        n = len(requests)
        lines = [
            Line(custom_id, body, now + knobs.batch_latency * (i + 1) / n)
            for i, (custom_id, body) in enumerate(requests)
        ]
        expire = knobs.batch_expire_after
        run_limit = n if expire is None else min(n, max(0, int(expire * n)))
        batch = Batch(batch_id, protocol, model, now, lines, run_limit, metadata)
        self.batches[batch_id] = batch
        return batch

    def _openai_batch(self, batch: Batch, *, validating: bool = False) -> dict[str, Any]:
        counts = batch.counts()
        outcome = batch.outcome
        status = "validating" if validating else batch.openai_status()
        counted = outcome != "failed" and not validating
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "model": batch.model or None,
            "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": int(batch.created_at),
            "in_progress_at": _seconds(batch.created_at) if counted else None,
            "expires_at": int(batch.created_at + WINDOW),
            "finalizing_at": _seconds(batch.ended_at) if outcome == "completed" else None,
            "completed_at": _seconds(batch.ended_at) if outcome == "completed" else None,
            "failed_at": _seconds(batch.ended_at) if outcome == "failed" else None,
            "expired_at": _seconds(batch.ended_at) if outcome == "expired" else None,
            "cancelling_at": _seconds(batch.cancel_at),
            "cancelled_at": _seconds(batch.ended_at) if outcome == "cancelled" else None,
            "request_counts": {
                "total": len(batch.lines) if counted else 0,
                "completed": counts["succeeded"],
                "failed": counts["failed"] + counts["expired"],
            },
            "metadata": batch.metadata,
            "usage": {
                "input_tokens": batch.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": batch.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": batch.input_tokens + batch.output_tokens,
            },
        }

    def _batch(self, request: web.Request, protocol: str) -> Batch | web.Response:
        batch_id = request.match_info["batch_id"]
        batch = self.batches.get(batch_id)
        if batch is None or batch.protocol != protocol:
            return self.sim.error_response(protocol, 404, f"No batch found with id '{batch_id}'.")
        return batch

    async def retrieve_batch(self, request: web.Request) -> web.Response:
        if denied := self._denied(request, "openai"):
            return denied
        self._tick()
        batch = self._batch(request, "openai")
        if isinstance(batch, web.Response):
            return batch
        return web.json_response(self._openai_batch(batch))

    async def list_batches(self, request: web.Request) -> web.Response:
        """Newest first, a page after the ``after`` cursor, as SyncCursorPage reads it."""
        if denied := self._denied(request, "openai"):
            return denied
        self._tick()
        newest = [b for b in reversed(self.batches.values()) if b.protocol == "openai"]
        page, has_more = _after(newest, request.query.get("after"), request.query, 20, 100)
        return web.json_response(_list_page([self._openai_batch(b) for b in page], has_more))

    async def cancel_batch(self, request: web.Request) -> web.Response:
        if denied := self._denied(request, "openai"):
            return denied
        self._tick()
        batch = self._batch(request, "openai")
        if isinstance(batch, web.Response):
            return batch
        if batch.outcome is not None:
            return self.sim.error_response(
                "openai", 409, f"Cannot cancel a batch with status '{batch.outcome}'."
            )
        self._cancel(batch)
        return web.json_response(self._openai_batch(batch))

    def _cancel(self, batch: Batch) -> None:
        """Stop running lines now; the batch ends batch_cancel_delay later, on a read."""
        if batch.cancel_at is None:
            batch.cancel_at = time.time()
            batch.cancel_done_at = batch.cancel_at + self.sim.state.knobs.batch_cancel_delay

    # -- Anthropic message batches -----------------------------------------------------------

    async def create_message_batch(self, request: web.Request) -> web.Response:
        """Create a message batch; request-level problems are a 400, as Anthropic's are.

        The params of each request are checked only when it runs (an ``errored`` result), as
        Anthropic does. hold_batch_create holds the answer after the batch exists.
        """
        if denied := self._denied(request, "anthropic"):
            return denied
        try:
            raw = await request.clone(client_max_size=ANTHROPIC_MAX_BYTES).read()
        except web.HTTPRequestEntityTooLarge:
            return self.sim.error_response(
                "anthropic", 413, "Request exceeds the maximum allowed number of bytes (256 MB)."
            )
        try:
            body = json.loads(raw)
        except ValueError:
            return self.sim.error_response("anthropic", 400, "the body is not valid JSON")
        found = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(found, list) or not found:
            return self.sim.error_response(
                "anthropic", 400, "requests: a list of at least one request is required"
            )
        if len(found) > ANTHROPIC_MAX_REQUESTS:
            return self.sim.error_response(
                "anthropic",
                400,
                f"requests: at most {ANTHROPIC_MAX_REQUESTS:,} requests are allowed per batch",
            )
        requests: list[tuple[str, dict[str, Any]]] = []
        seen: set[str] = set()
        for i, item in enumerate(found):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            params = item.get("params") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
                return self.sim.error_response(
                    "anthropic",
                    400,
                    f"requests.{i}.custom_id: String should match pattern '{_CUSTOM_ID.pattern}'",
                )
            if custom_id in seen:
                return self.sim.error_response(
                    "anthropic",
                    400,
                    f"requests.{i}.custom_id: duplicate custom_id '{custom_id}'; each must be "
                    "unique within the batch",
                )
            if not isinstance(params, dict):
                return self.sim.error_response(
                    "anthropic", 400, f"requests.{i}.params: Field required"
                )
            seen.add(custom_id)
            requests.append((custom_id, params))
        self._tick()
        model = str(requests[0][1].get("model", ""))
        batch = self._new_batch(
            "anthropic", f"msgbatch_{_hex()}", model, requests, time.time(), None
        )
        await self._hold("batch_create", self.sim.state.knobs.hold_batch_create)
        return web.json_response(self._anthropic_batch(batch, request))

    def _anthropic_batch(self, batch: Batch, request: web.Request) -> dict[str, Any]:
        counts = batch.counts()
        ended = batch.outcome is not None
        results_url = (
            f"{request.scheme}://{request.host}/v1/messages/batches/{batch.id}/results"
            if ended
            else None
        )
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": batch.anthropic_status(),
            "request_counts": {
                "processing": counts["pending"],
                "succeeded": counts["succeeded"],
                "errored": counts["failed"],
                "canceled": counts["cancelled"],
                "expired": counts["expired"],
            },
            "ended_at": _rfc3339(batch.ended_at),
            "created_at": _rfc3339(batch.created_at),
            "expires_at": _rfc3339(batch.created_at + WINDOW),
            "cancel_initiated_at": _rfc3339(batch.cancel_at),
            "archived_at": None,
            "results_url": results_url,
        }

    async def retrieve_message_batch(self, request: web.Request) -> web.Response:
        if denied := self._denied(request, "anthropic"):
            return denied
        self._tick()
        batch = self._batch(request, "anthropic")
        if isinstance(batch, web.Response):
            return batch
        return web.json_response(self._anthropic_batch(batch, request))

    async def list_message_batches(self, request: web.Request) -> web.Response:
        """Newest first; ``after_id`` pages towards older batches, ``before_id`` towards newer."""
        if denied := self._denied(request, "anthropic"):
            return denied
        self._tick()
        newest = [b for b in reversed(self.batches.values()) if b.protocol == "anthropic"]
        before = request.query.get("before_id")
        if before is not None:
            ids = [b.id for b in newest]
            end = ids.index(before) if before in ids else 0
            limit = _limit(request.query, 20, 1000)
            page, has_more = newest[max(0, end - limit) : end], end - limit > 0
        else:
            page, has_more = _after(newest, request.query.get("after_id"), request.query, 20, 1000)
        return web.json_response(
            {
                "data": [self._anthropic_batch(b, request) for b in page],
                "has_more": has_more,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }
        )

    async def cancel_message_batch(self, request: web.Request) -> web.Response:
        """Cancel; an ended batch comes back unchanged (there is nothing left to cancel)."""
        if denied := self._denied(request, "anthropic"):
            return denied
        self._tick()
        batch = self._batch(request, "anthropic")
        if isinstance(batch, web.Response):
            return batch
        if batch.outcome is None:
            self._cancel(batch)
        return web.json_response(self._anthropic_batch(batch, request))

    async def delete_message_batch(self, request: web.Request) -> web.Response:
        if denied := self._denied(request, "anthropic"):
            return denied
        self._tick()
        batch = self._batch(request, "anthropic")
        if isinstance(batch, web.Response):
            return batch
        if batch.outcome is None:
            return self.sim.error_response(
                "anthropic", 400, "Batches must end before they can be deleted; cancel it first."
            )
        del self.batches[batch.id]
        return web.json_response({"id": batch.id, "type": "message_batch_deleted"})

    async def message_batch_results(self, request: web.Request) -> web.Response:
        """The JSON Lines results of an ended batch, one per request, in request order."""
        if denied := self._denied(request, "anthropic"):
            return denied
        self._tick()
        batch = self._batch(request, "anthropic")
        if isinstance(batch, web.Response):
            return batch
        if batch.outcome is None:
            return self.sim.error_response(
                "anthropic", 400, f"Batch {batch.id} has not ended; its results are not ready."
            )
        await self._hold("results", self.sim.state.knobs.hold_results)
        rows = []
        for line in batch.lines:
            result: dict[str, Any]
            if line.verdict is None:
                result = {"type": "canceled" if batch.outcome == "cancelled" else "expired"}
            elif line.verdict.status == 200:
                result = {"type": "succeeded", "message": line.verdict.body}
            else:
                result = {"type": "errored", "error": line.verdict.body}
            rows.append(json.dumps({"custom_id": line.custom_id, "result": result}) + "\n")
        return web.Response(body="".join(rows).encode(), content_type="application/x-jsonl")


def _read_openai_lines(
    data: bytes, endpoint: str
) -> tuple[list[tuple[str, dict[str, Any]]], str, list[dict[str, Any]]]:
    """Check a batch input file as OpenAI's validation does: (requests, model, errors)."""
    if len(data) > OPENAI_MAX_BATCH_BYTES:
        return [], "", [_line_error("file_too_large", "The input file exceeds 200 MB.")]
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return [], "", [_line_error("invalid_file_format", "The input file is not UTF-8 JSONL.")]
    rows = [(number, row) for number, row in enumerate(text.splitlines(), 1) if row.strip()]
    if not rows:
        return [], "", [_line_error("empty_file", "The input file has no requests.")]
    if len(rows) > OPENAI_MAX_LINES:
        message = f"The input file has {len(rows):,} requests; at most {OPENAI_MAX_LINES:,}."
        return [], "", [_line_error("too_many_requests", message)]
    requests: list[tuple[str, dict[str, Any]]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    model = ""
    for number, row in rows:
        try:
            item = json.loads(row)
        except ValueError:
            item = None
        if not isinstance(item, dict):
            errors.append(
                _line_error("invalid_json_line", "This line is not a JSON object.", None, number)
            )
            continue
        custom_id, body = item.get("custom_id"), item.get("body")
        problem: tuple[str, str, str] | None = None
        if not isinstance(custom_id, str) or not custom_id:
            problem = ("missing_required_parameter", "The 'custom_id' is required.", "custom_id")
        elif custom_id in seen:
            problem = (
                "duplicate_custom_id",
                "The custom_id for this request is a duplicate of another request. The "
                "custom_id parameter must be unique for each request in a batch.",
                "custom_id",
            )
        elif item.get("method") != "POST":
            problem = ("invalid_method", "The method must be 'POST'.", "method")
        elif item.get("url") != endpoint:
            problem = (
                "invalid_url",
                f"The URL provided for this request does not match the batch endpoint "
                f"({endpoint}).",
                "url",
            )
        elif not isinstance(body, dict):
            problem = ("invalid_request", "The 'body' must be a JSON object.", "body")
        elif not isinstance(body.get("model"), str) or not body["model"]:
            problem = ("missing_required_parameter", "The 'body.model' is required.", "body.model")
        elif model and body["model"] != model:
            problem = (
                "mismatched_model",
                f"The provided model '{body['model']}' does not match the model '{model}' of "
                "the other requests. All requests in a batch must use the same model.",
                "body.model",
            )
        if isinstance(custom_id, str):
            seen.add(custom_id)
        if problem is not None:
            errors.append(_line_error(*problem, number))
            continue
        assert isinstance(body, dict) and isinstance(custom_id, str)
        model = model or body["model"]
        requests.append((custom_id, body))
    return requests, model, errors


def _valid_metadata(metadata: Any) -> bool:
    return (
        isinstance(metadata, dict)
        and len(metadata) <= 16
        and all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in metadata.items()
        )
    )


def _limit(query: Any, default: int, most: int = 10_000) -> int:
    try:
        return max(1, min(most, int(query.get("limit", default))))
    except ValueError:
        return default


def _after(
    items: list[Any], cursor: str | None, query: Any, default: int, most: int = 10_000
) -> tuple[list[Any], bool]:
    """The page of ``items`` (each with an ``id``) that follows ``cursor``, and whether more do."""
    start = 0
    if cursor is not None:
        ids = [item.id for item in items]
        start = ids.index(cursor) + 1 if cursor in ids else len(items)
    limit = _limit(query, default, most)
    return items[start : start + limit], start + limit < len(items)


def _list_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
