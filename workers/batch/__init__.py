"""Batch mode: a model's items go through its provider's Batch API, at half the price.

The pipeline keeps its shape. The producer enqueues one task per (pair, model) as always;
for a batch-mode model the score task, after the cache lookup, the cancel check and the
budget reservation, *buffers* its item in Redis (``lane.py``) and finishes without closing
its chord part. The model's workers then gather a lane's buffered items (one lane per job
and model) into provider batches (``tasks.flush``), record each batch and its provider id
in Redis, and poll it with scheduled tasks (``tasks.poll``) that hold no worker thread while
the provider works. When a batch ends, every item's record is written and its chord part
closed exactly as a synchronous task would, so the chord callback closes the job as usual.

Crash safety rests on three rules:
- an item is in Redis (buffered, or listed in a batch) before the message it replaces is
  acknowledged, and leaves only once its record is written or it is buffered again;
- a batch's state changes only forward (creating → submitted → collected) and every step
  may run twice: records are first-report-wins, chord parts are counted once per task;
- a create call is never repeated blindly: before creating again after a crash or a
  timeout, the provider's batch list is searched for the batch we may already have made
  (OpenAI: by the ``ibt_batch`` metadata; Anthropic, which has no metadata: by creation
  time and size, creates being serialized per model). See README "Batch mode".
"""
