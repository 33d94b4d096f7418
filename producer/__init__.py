"""The producer: CLI, Python API, input loading, job submission and output."""
