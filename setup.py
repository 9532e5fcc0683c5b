"""Build script for the optional compiled kernels (everything else is in pyproject.toml).

``gtsrb_kit._kernels`` speeds up cooking; where it cannot be compiled (no C compiler), the
install goes on without it and gtsrb-kit uses its numpy code, which gives the same results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "gtsrb_kit._kernels",
            sources=["gtsrb_kit/_kernels.c"],
            # no contraction of a * b + c into fused multiply-adds except where the code asks
            # for them: the kernels reproduce numpy's rounding operation for operation
            extra_compile_args=["-O3", "-ffp-contract=off"],
            optional=True,
        )
    ]
)
