"""Measuring: latency, memory, task metrics and fidelity, the harness and the report."""
