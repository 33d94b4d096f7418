"""The simplest peer: one process, asyncio, the async SDKs, a semaphore per model.

This is what the seed's executor effectively is. Prints one JSON line with its figures.
    python -m bench.peer_asyncio --pairs 1000 --concurrency 64 --openai URL --anthropic URL
With ``--input FILE --output FILE`` it judges the pairs of a JSON Lines file and writes the
documented list, as ``ibt score`` does (``bench.whole_command`` times both as whole
commands). It imports only the SDKs its ``--models`` need.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from typing import Any

from bench.names import KEY, MODELS
from workers.parsing import Verdict, parse_reply
from workers.prompt import render


async def run(
    pairs: int | list[tuple[str, str]],
    concurrency: int,
    openai_url: str,
    anthropic_url: str,
    models: tuple[str, ...] = MODELS,
    output: str | None = None,
) -> dict[str, float]:
    if any(model.startswith("gpt") for model in models):
        import openai

        oa = openai.AsyncOpenAI(api_key=KEY, base_url=openai_url, max_retries=0)
    if any(not model.startswith("gpt") for model in models):
        import anthropic

        an = anthropic.AsyncAnthropic(api_key=KEY, base_url=anthropic_url, max_retries=0)
    limits = {model: asyncio.Semaphore(concurrency) for model in models}
    texts = (
        pairs
        if isinstance(pairs, list)
        else [(f"peer question {i}", f"peer answer {i}") for i in range(pairs)]
    )
    records: list[dict[str, Any]] = []

    async def judge(model: str, i: int) -> bool:
        instruction, generation = texts[i]
        prompt = render(instruction, generation)
        async with limits[model]:
            if model.startswith("gpt"):
                reply = await oa.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": prompt}], max_tokens=512
                )
                text = reply.choices[0].message.content or ""
            else:
                message = await an.messages.create(
                    model=model, max_tokens=512, messages=[{"role": "user", "content": prompt}]
                )
                text = "".join(b.text for b in message.content if b.type == "text")
        verdict = parse_reply(text)
        if output:
            score = str(verdict.score) if isinstance(verdict, Verdict) else None
            records.append(
                {
                    "reasoning": text,
                    "score": score,
                    "instruction": instruction,
                    "generation": generation,
                    "model": model,
                }
            )
        return isinstance(verdict, Verdict)

    started = time.perf_counter()
    results = await asyncio.gather(*(judge(m, i) for i in range(len(texts)) for m in models))
    wall = time.perf_counter() - started
    if output:
        with open(output, "w") as handle:
            json.dump(records, handle)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "calls": len(results),
        "ok": sum(results),
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--openai", required=True)
    parser.add_argument("--anthropic", required=True)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--input", help="JSON Lines of pairs (default: --pairs made-up pairs)")
    parser.add_argument("--output", help="write the documented list here")
    args = parser.parse_args()
    pairs: int | list[tuple[str, str]] = args.pairs
    if args.input:
        with open(args.input) as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        pairs = [(row["instruction"], row["generation"]) for row in rows]
    figures = asyncio.run(
        run(
            pairs,
            args.concurrency,
            args.openai,
            args.anthropic,
            tuple(args.models),
            args.output,
        )
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
