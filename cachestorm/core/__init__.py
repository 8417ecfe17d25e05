"""The core every part stands on: errors, URL and loopback rules, ports and process supervision,
interrupts, durations and the run folder. It imports nothing else of cachestorm's (lint-imports checks)."""
