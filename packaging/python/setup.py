"""Marks the wheel platform-specific when it carries the native `receptor` binary."""
import os

from setuptools import setup

cmdclass = {}
try:
    from wheel.bdist_wheel import bdist_wheel

    class PlatformWheel(bdist_wheel):
        def finalize_options(self):
            super().finalize_options()
            here = os.path.dirname(os.path.abspath(__file__))
            self.root_is_pure = not os.path.exists(os.path.join(here, "receptord", "bin", "receptor"))

        def get_tag(self):
            python, abi, plat = super().get_tag()
            if not self.root_is_pure:
                # Pure Python calling a native executable: any Python 3, this platform.
                python, abi = "py3", "none"
            return python, abi, plat

    cmdclass["bdist_wheel"] = PlatformWheel
except ImportError:  # pragma: no cover - wheel is in build-system.requires
    pass

setup(cmdclass=cmdclass)
