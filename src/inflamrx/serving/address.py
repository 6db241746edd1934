"""Checks of `inflamrx serve`'s options that need no MLflow: a busy port, a port out of range
or a bad worker count is refused in one line, before MLflow is imported or a model loaded."""

from __future__ import annotations

import os
import socket

from inflamrx.errors import InputError


def default_workers() -> int:
    """The default of --workers: this machine's cores (those this process may run on)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_serve_options(host: str, port: int, workers: int, timeout: int) -> None:
    """Refuse what the server could not start with (rather than a traceback from every
    worker after the model loaded)."""
    if workers < 1:
        raise InputError(f"--workers must be at least 1. Got {workers}.")
    if timeout < 1:
        raise InputError(f"--timeout must be at least 1 second. Got {timeout}.")
    if not 1 <= port <= 65535:
        raise InputError(f"--port must be between 1 and 65535. Got {port}.")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise InputError(f"--host {host!r} is not a name or address of this machine") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as err:
            raise InputError(
                f"cannot listen on {host}:{port}: {err.strerror or err}; another server may "
                "be using the port: choose another with --port"
            ) from None
