"""Builds the native library with cargo and puts it inside the package, so that
``pip install bindings/python`` gives a working ``import switchyard`` with nothing else set.

Set ``SWITCHYARD_LIB`` to a built ``libswitchyard.so`` to bundle that one instead of
building (a cross build, or a library built with other features).
"""

import os
import shutil
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def library_name() -> str:
    if sys.platform == "darwin":
        return "libswitchyard.dylib"
    if sys.platform == "win32":
        return "switchyard.dll"
    return "libswitchyard.so"


class BuildWithNativeLibrary(build_py):
    def run(self):
        super().run()
        built = os.environ.get("SWITCHYARD_LIB")
        if not built:
            manifest = os.path.join(ROOT, "Cargo.toml")
            if not os.path.isfile(manifest):
                raise RuntimeError(
                    "switchyard: no Cargo.toml at %s to build the native library from; "
                    "build from the repository, or set SWITCHYARD_LIB" % ROOT
                )
            cargo = os.environ.get("CARGO", "cargo")
            subprocess.check_call(
                [cargo, "build", "--release", "--lib", "--quiet", "--manifest-path", manifest]
            )
            target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
            built = os.path.join(target, "release", library_name())
        destination = os.path.join(self.build_lib, "switchyard", library_name())
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.copyfile(built, destination)


setup(cmdclass={"build_py": BuildWithNativeLibrary})
