"""The circuit breaker: run a command, classify its output, halt, roll back."""
