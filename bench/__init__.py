"""Benchmarks, each against a plain pika baseline in the same run.

Run from the project folder: .venv/bin/python -m bench.run_all
"""
