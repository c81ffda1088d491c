#!/usr/bin/env python3
"""Run every benchmark against one throwaway broker (or AMQP_URL) and print their tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import common as c

BENCHES = ["bench_dispatch.py", "bench_overhead.py", "bench_publish.py", "bench_startup.py", "bench_memory.py"]

if __name__ == "__main__":
    with c.broker_url() as url:
        env = {**os.environ, "AMQP_URL": url}
        for bench in BENCHES:
            subprocess.run([sys.executable, str(Path(__file__).parent / bench)], env=env, check=True)
