"""Imported at start-up by every Python process whose PYTHONPATH holds this folder (the Hub tests' processes):
refuses, and records in the file $LOOPBACK_LOG, any name lookup or connection to a host other than this machine,
so a test proves its Hub traffic stayed on 127.0.0.1 even where a library would swallow the error."""

import os
import sys

LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost", None}


def refuse(what, host):
    with open(os.environ["LOOPBACK_LOG"], "a", encoding="utf-8") as log:
        log.write(f"{what} {host}\n")
    raise ConnectionRefusedError(f"{what} {host}: only loopback traffic is allowed in the Hub tests")


def loopback_only(event, args):
    if event == "socket.getaddrinfo":
        host = args[0].decode() if isinstance(args[0], bytes) else args[0]
        if host not in LOCAL_HOSTS:
            refuse("lookup of", host)
    elif event == "socket.connect":
        address = args[1]
        if isinstance(address, tuple) and address[0] not in LOCAL_HOSTS:
            refuse("connection to", address[0])


if os.environ.get("LOOPBACK_LOG"):
    sys.addaudithook(loopback_only)
