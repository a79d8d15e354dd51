"""Python job queues that the benchmark compares with pyqueue, run from .bench-venv."""
