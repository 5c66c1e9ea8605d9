"""Loopback ports: is one free, which one to use."""

from __future__ import annotations

import errno
import socket

from conveyor.errors import ConfigurationError

SCAN = 50  # how far past a default port to look for a free one


class PortTaken(ConfigurationError):
    """A port given explicitly is already in use."""


def port_free(host: str, port: int) -> bool:
    """True if a server could listen on ``host:port`` now (as uvicorn binds: SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise ConfigurationError(
                f"cannot listen on {host}:{port}: {exc.strerror}",
                hint="use an address of this machine, e.g. --host 127.0.0.1",
            ) from exc
    return True


def choose_port(
    host: str, requested: int | None, default: int, part: str, option: str, taken: set[int]
) -> int:
    """``requested`` if free (else ``PortTaken``), or the first free port from ``default``."""
    if requested is not None:
        if requested in taken or not port_free(host, requested):
            raise PortTaken(
                f"{part}: port {requested} on {host} is already in use",
                hint=f"stop what listens there, or choose another port with {option}",
            )
        return requested
    for port in range(default, default + SCAN):
        if port not in taken and port_free(host, port):
            return port
    raise PortTaken(
        f"{part}: ports {default}-{default + SCAN - 1} on {host} are all in use",
        hint=f"choose a port with {option}",
    )


def ephemeral_port(host: str = "127.0.0.1") -> int:
    """A port the kernel says is free now (for internal endpoints nobody types)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
