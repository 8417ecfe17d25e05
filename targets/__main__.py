"""`python -m targets ...`: parse, check, serve. Bad input: one line on stderr, exit 2."""

from __future__ import annotations

import sys

from cachestorm.core.errors import CachestormError


def main(argv: list[str] | None = None) -> int:
    from cachestorm.targets.app import run
    from cachestorm.targets.settings import parse_settings

    try:
        run(parse_settings(argv))
    except CachestormError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
