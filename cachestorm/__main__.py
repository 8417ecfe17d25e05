import sys

from cachestorm.core import interrupts

interrupts.install()  # first: a signal while the CLI imports ends it as an interrupt too, not by default action
try:
    from cachestorm.cli.main import main
except BaseException as exc:  # noqa: BLE001 - an interrupt here (nothing had started); anything else as it was
    if not interrupts.caused_by_interrupt(exc):
        raise
    interrupts.ignore_from_now()
    print("interrupted: nothing had started", file=sys.stderr)
    sys.exit(130)

main()
