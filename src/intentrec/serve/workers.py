"""Several service processes behind one port, each with its own listening socket (SO_REUSEPORT).

uvicorn's own ``--workers`` shares one socket among the processes, and whichever process wakes
first accepts: a burst of new connections (16 clients connecting at once) can all land on one
process while the other idles, and a keep-alive client stays where it landed. With one socket per
process in a SO_REUSEPORT group, the kernel spreads connections evenly over them by their address
hash. The parent only supervises: it starts N processes (each builds its app with
`intentrec.serve.app.app_from_environment`), restarts one that dies, and stops them all on SIGINT
or SIGTERM. Where SO_REUSEPORT does not exist (Windows), uvicorn's supervisor is used instead.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from types import FrameType

__all__ = ["reuse_port_supported", "serve_workers"]

log = logging.getLogger(__name__)
APP = "intentrec.serve.app:app_from_environment"


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _worker(host: str, port: int, log_level: str) -> None:
    import uvicorn

    sock = _listen(host, port)
    config = uvicorn.Config(APP, factory=True, log_level=log_level, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def serve_workers(workers: int, host: str, port: int, log_level: str) -> int:
    """Run ``workers`` service processes on ``host:port`` until SIGINT or SIGTERM; 0 on a clean stop."""
    probe = _listen(host, port)  # a port another program holds fails here, with its own error
    probe.close()
    context = multiprocessing.get_context("spawn")
    stopping = False

    def start() -> BaseProcess:
        process = context.Process(target=_worker, args=(host, port, log_level), name="intentrec-worker")
        process.start()
        return process

    def stop(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    processes = [start() for _ in range(workers)]
    try:
        while not stopping:
            time.sleep(0.2)
            for i, process in enumerate(processes):
                if not process.is_alive() and not stopping:
                    log.error("worker %s exited with %s; starting another", process.pid, process.exitcode)
                    processes[i] = start()
    finally:
        for process in processes:
            if process.is_alive() and process.pid is not None:
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight, then exits
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
