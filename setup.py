"""Only the optional native extension lives here; pyproject.toml holds the project's metadata.

`optional=True`: if the C compiler is missing or fails, the install still succeeds and the chaos
proxy forwards in Python (chaos/proxy/fastpath.py falls back when the import fails).
"""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):  # epoll + eventfd
    ext_modules.append(
        Extension(
            "chaos.proxy._fastpath",
            sources=["chaos/proxy/_fastpath.c", "chaos/proxy/_sockmap.c"],
            depends=["chaos/proxy/_sockmap.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall"],
            optional=True,
        )
    )

setup(ext_modules=ext_modules)
