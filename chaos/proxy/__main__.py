"""`python -m chaos.proxy --host 127.0.0.1 --port 0 --ready-file PATH`: the proxy as a child process.

Once listening it writes {"api_url": ..., "pid": ...} to PATH (atomically), so a parent polls for the
file instead of racing for a port.
"""

from __future__ import annotations

import argparse
import sys

from cachestorm.core.errors import CachestormError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.proxy", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8474)
    parser.add_argument("--config", default=None, help="populate JSON file (a list of proxies)")
    parser.add_argument("--ready-file", default=None)
    parser.add_argument("--busy-poll-us", type=int, default=0,
                        help="keep polling this long after the last chunk instead of sleeping (0 = off)")
    parser.add_argument("--allow-unix", action="append", default=[], metavar="PATH",
                        help="a Unix socket (or a folder of them) proxies may forward to; repeatable")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow any listen address, privileged ports and any Unix upstream")
    args = parser.parse_args(argv)
    try:
        # these load the toxics: a bad plug-in is one line too
        from cachestorm.chaos.proxy.guard import AddressGuard
        from cachestorm.chaos.proxy.server import run

        run(args.host, args.port, args.config, args.ready_file, busy_poll_us=args.busy_poll_us,
            guard=AddressGuard.of(args.allow_remote, args.allow_unix))
    except CachestormError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
