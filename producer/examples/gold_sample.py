"""Build the synthetic labelled sample behind docs/gold_heatmap.png (run it to rebuild).

Everything here is synthetic, by construction, and says so: 300 arithmetic questions with
answers of six kinds, a "human" label given by a fixed rule per kind (not by people), and
two made-up judges, ``synthetic-strict`` (the label plus small noise) and
``synthetic-lenient`` (a point more for long answers: a length bias on purpose). It shows
what ``ibt report --gold`` finds, on data whose truth is known.

    uv run python producer/examples/gold_sample.py
    uv run ibt report producer/examples/gold_sample_results.jsonl \
        --gold producer/examples/gold_sample.jsonl --png plots/
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
PAIRS = 300
PADDING = " Multiplication is repeated addition, which is one of the first things taught in school."


def answer(kind: str, a: int, b: int, rng: random.Random) -> tuple[str, int]:
    """The answer of ``kind`` to a x b, and the label the rule gives it."""
    right, wrong = a * b, a * b + rng.choice([-2, -1, 1, 2])
    return {
        "concise": (f"It's {right}.", 5),
        "explained": (f"{a} times {b} is {right}: {a} added {b} times.", 5),
        "padded": (f"Great question! The answer is {right}.{PADDING * 2}", 3),
        "slightly_wrong": (f"It's {wrong}.", 2),
        "wrong_padded": (f"Let me think. The answer is {wrong}.{PADDING * 2}", 1),
        "refusal": ("I cannot help with that.", 1),
    }[kind]


def judge(label: int, generation: str, lenient: bool, rng: random.Random) -> int:
    noise = rng.choices([0, 1, -1, 2, -2], weights=[70, 12, 12, 3, 3])[0]
    bonus = 1 if lenient and len(generation) > 80 else 0
    return max(1, min(5, label + noise + bonus))


def main() -> None:
    rng = random.Random(14)
    kinds = ["concise", "explained", "padded", "slightly_wrong", "wrong_padded", "refusal"]
    gold, results = [], []
    for i in range(PAIRS):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        instruction = f"What is {a} times {b}?"
        generation, label = answer(kinds[i % len(kinds)], a, b, rng)
        gold.append({"id": f"q{i}", "instruction": instruction, "generation": generation,
                     "score": label})  # fmt: skip
        for name, lenient in (("synthetic-strict", False), ("synthetic-lenient", True)):
            score = judge(label, generation, lenient, rng)
            results.append(
                {
                    "reasoning": f"synthetic verdict ({name})",
                    "score": str(score),
                    "instruction": instruction,
                    "generation": generation,
                    "model": name,
                    "id": f"q{i}",
                }  # fmt: skip
            )
    for name, rows in (("gold_sample.jsonl", gold), ("gold_sample_results.jsonl", results)):
        with (HERE / name).open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


if __name__ == "__main__":
    main()
