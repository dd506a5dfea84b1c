"""Marks the wheel platform-specific when it carries the native `receptor` binary.

`make wheel` bundles the binary built against glibc 2.17 and sets RECEPTORD_WHEEL_PLAT to
the matching tag (manylinux_2_17_x86_64.manylinux2014_x86_64), then checks it with
`auditwheel show`; without it the tag is this machine's (linux_x86_64)."""
import os

from setuptools import Distribution, setup

HERE = os.path.dirname(os.path.abspath(__file__))
BUNDLED = os.path.exists(os.path.join(HERE, "receptord", "bin", "receptor"))


class BinaryDistribution(Distribution):
    """With the binary, the package is platlib (the wheel's root, where auditwheel looks)."""

    def has_ext_modules(self):
        return BUNDLED


cmdclass = {}
try:
    from wheel.bdist_wheel import bdist_wheel

    class PlatformWheel(bdist_wheel):
        def get_tag(self):
            python, abi, plat = super().get_tag()
            if BUNDLED:
                # Pure Python calling a native executable: any Python 3, this platform.
                python, abi = "py3", "none"
                plat = os.environ.get("RECEPTORD_WHEEL_PLAT") or plat
            return python, abi, plat

    cmdclass["bdist_wheel"] = PlatformWheel
except ImportError:  # pragma: no cover - wheel is in build-system.requires
    pass

setup(cmdclass=cmdclass, distclass=BinaryDistribution)
