"""The one compiled part of atrous: the dense CRF's mean field (src/atrous/crf/_native.c).

Plain C against the CPython API (no torch headers, no build dependency beyond setuptools),
built on install where a C compiler is present.  It is optional: without a compiler, or on a
platform without POSIX threads, the install goes on and ``atrous.crf`` runs its torch path
(``atrous.crf.native.available()`` says which).
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# -ffp-contract=off: no fused multiply-adds, so the lattice's float32 arithmetic rounds as the
# C++ original does; -fno-math-errno lets floorf vectorize; -fopenmp-simd reads the simd
# pragmas without linking an OpenMP runtime.
UNIX_FLAGS = ["-O3", "-std=c11", "-pthread", "-ffp-contract=off", "-fno-math-errno", "-Wno-psabi"]


class BuildExt(build_ext):
    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "unix":
            for ext in self.extensions:
                ext.extra_compile_args = [*UNIX_FLAGS, *ext.extra_compile_args]
                ext.extra_link_args = ["-pthread", *ext.extra_link_args]
        super().build_extensions()


setup(
    ext_modules=[
        Extension("atrous.crf._native", sources=["src/atrous/crf/_native.c"], optional=True)
    ],
    cmdclass={"build_ext": BuildExt},
)
