"""The real agent framework's side of the conformance tests: the echo worker (run in .venv-agents) and its ear."""
