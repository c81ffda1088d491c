#!/usr/bin/env python3
"""A stand-in `docker` for the demo's Docker path, on a machine with no Docker engine.

It records every call in $FAKE_DOCKER_LOG. `docker run -p 127.0.0.1:P:5672 ...` starts a TCP forwarder
from P to the test broker at 127.0.0.1:$FAKE_DOCKER_TARGET_PORT, so the demo finds a real RabbitMQ there;
`docker rm -f` stops it. `docker info` succeeds: the engine is "running".
"""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

STATE = Path(os.environ["FAKE_DOCKER_LOG"]).with_suffix(".pid")


async def forward(listen_port: int, target_port: int) -> None:
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(client_reader, client_writer) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


def main() -> int:
    args = sys.argv[1:]
    with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
        log.write(" ".join(args) + "\n")
    if args[:1] == ["forward"]:
        asyncio.run(forward(int(args[1]), int(args[2])))
    elif args[:1] == ["run"]:
        published = [args[i + 1] for i, arg in enumerate(args) if arg == "-p"]
        amqp = next(p for p in published if p.endswith(":5672"))
        port = int(amqp.split(":")[1])
        forwarder = subprocess.Popen([sys.executable, __file__, "forward", str(port),
                                      os.environ["FAKE_DOCKER_TARGET_PORT"]], start_new_session=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        STATE.write_text(str(forwarder.pid))
        print("0123456789ab")
    elif args[:2] == ["rm", "-f"]:
        if STATE.exists():
            os.kill(int(STATE.read_text()), signal.SIGTERM)
            STATE.unlink()
        else:
            print(f"Error: No such container: {args[2]}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
