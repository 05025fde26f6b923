"""
The C extension only (setup.cfg holds all the metadata): setuptools can't
declare ext_modules in setup.cfg.  C{_multiport_udp}, the UDP relay's data
path, is a top-level module so that an installed copy is found even when
the tests import C{multiport} from the source tree.  It is optional: an
install without a compiler still works, and the relay runs in Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "_multiport_udp",
            sources=["native/_multiport_udp.c"],
            optional=True,
        )
    ]
)
