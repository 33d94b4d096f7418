"""The simplest peer: one process, asyncio, the async SDKs, a semaphore per model.

This is what the seed's executor effectively is. Prints one JSON line with its figures.
    python -m bench.peer_asyncio --pairs 1000 --concurrency 64 --openai URL --anthropic URL
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time

import anthropic
import openai

from bench.common import KEY, MODELS
from workers.parsing import Verdict, parse_reply
from workers.prompt import render


async def run(
    pairs: int, concurrency: int, openai_url: str, anthropic_url: str
) -> dict[str, float]:
    oa = openai.AsyncOpenAI(api_key=KEY, base_url=openai_url, max_retries=0)
    an = anthropic.AsyncAnthropic(api_key=KEY, base_url=anthropic_url, max_retries=0)
    limits = {model: asyncio.Semaphore(concurrency) for model in MODELS}

    async def judge(model: str, i: int) -> bool:
        prompt = render(f"peer question {i}", f"peer answer {i}")
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
        return isinstance(parse_reply(text), Verdict)

    started = time.perf_counter()
    results = await asyncio.gather(*(judge(m, i) for i in range(pairs) for m in MODELS))
    wall = time.perf_counter() - started
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
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.pairs, args.concurrency, args.openai, args.anthropic))))


if __name__ == "__main__":
    main()
