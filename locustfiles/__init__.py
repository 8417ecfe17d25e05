"""cachestorm.traffic: the Locust traffic (the checkout's locustfiles/ folder).

Importing this package does not import Locust (it monkey-patches the standard library on import);
only the locustfiles themselves and the modules they use do.
"""

from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def locustfile(domain: str) -> Path:
    """The locustfile of one domain, wherever the package is installed."""
    return FOLDER / f"{domain}.py"
