"""systemd notify (the NOTIFY_SOCKET datagram protocol, no libsystemd) and the watchdog period, for the daemon."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("edgeav.runtime.daemon")


def sd_notify(message: str) -> bool:
    """Send `message` (e.g. "READY=1", "WATCHDOG=1", "STATUS=...") to systemd; False when not under systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr[0] == "@":  # abstract namespace
        addr = "\0" + addr[1:]
    elif addr[0] != "/":
        log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket; not notifying", addr)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(message.encode("utf-8"))
        return True
    except OSError as e:
        log.warning("sd_notify(%s) failed: %s", message.split("=")[0], e)
        return False


def systemd_watchdog_s() -> float | None:
    """systemd's watchdog period (WATCHDOG_USEC, for this process), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return int(usec) / 1e6
    except ValueError:
        return None


__all__ = ["sd_notify", "systemd_watchdog_s"]
