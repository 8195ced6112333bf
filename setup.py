"""Build the optional C hot path (analyzer/decode/_fastpath.c).

Everything else is declared in pyproject.toml. The extension is optional: where no C
compiler is available the install still succeeds and smtpflow runs its pure-Python path,
with the same results, only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "analyzer.decode._fastpath",
            ["analyzer/decode/_fastpath.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
