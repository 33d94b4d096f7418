"""Names the benchmarks share; a module of its own so the asyncio peer imports nothing else."""

KEY = "bench-key"
MODELS = ("gpt-bench", "claude-bench")  # OpenAI and Anthropic protocol, by name prefix
