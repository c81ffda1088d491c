#!/usr/bin/env python3
"""Run every benchmark against one throwaway broker (or AMQP_URL) and print their tables."""

from __future__ import annotations

import os
import subprocess
import sys

from bench import common as c

BENCHES = ["bench_dispatch", "bench_overhead", "bench_keeper", "bench_retry_cost", "bench_publish", "bench_startup",
           "bench_memory", "bench_report"]

if __name__ == "__main__":
    with c.broker_url() as url:
        env = {**os.environ, "AMQP_URL": url}
        for bench in BENCHES:
            subprocess.run([sys.executable, "-m", f"bench.{bench}"], cwd=c.ROOT, env=env, check=True)
