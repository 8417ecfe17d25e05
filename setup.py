"""The package layout and the optional native extension; pyproject.toml holds the project's metadata.

The user's folders stay at the top of the checkout, but the only import package is `cachestorm`:
each folder is mapped to a subpackage (`targets/` is `cachestorm.targets`, `locustfiles/` is
`cachestorm.traffic`, ...), so nothing with a generic name like `reports` lands in site-packages.

The extension is `optional=True`: if the C compiler is missing or fails, the install still succeeds
and the chaos proxy forwards in Python (chaos/proxy/fastpath.py falls back when the import fails).
"""

import sys

from setuptools import Extension, find_packages, setup

FOLDERS = {
    "cachestorm": "cachestorm",
    "cachestorm.targets": "targets",
    "cachestorm.chaos": "chaos",
    "cachestorm.reports": "reports",
    "cachestorm.traffic": "locustfiles",
}

packages = []
for package, folder in FOLDERS.items():
    packages.append(package)
    packages.extend(f"{package}.{sub}" for sub in find_packages(folder))

ext_modules = []
if sys.platform.startswith("linux"):  # epoll + eventfd
    ext_modules.append(
        Extension(
            "cachestorm.chaos.proxy._fastpath",
            sources=["chaos/proxy/_fastpath.c", "chaos/proxy/_sockmap.c"],
            depends=["chaos/proxy/_sockmap.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
            optional=True,
        )
    )

setup(
    packages=packages,
    package_dir=FOLDERS,
    package_data={"cachestorm.chaos": ["experiments/*.yaml"]},
    ext_modules=ext_modules,
)
