"""A real agent framework worker for the conformance tests and the benchmark: the echo worker (run in .venv-agents) and
its ear."""
