"""Build of the private extension autosteer._C (metadata lives in pyproject.toml).

Needs a C compiler, the Python headers and the NumPy headers only: no torch,
no C++.  Environment switches:
  AUTOSTEER_DEBUG=1      -O0 -g, assertions on
  AUTOSTEER_SANITIZE=1   also AddressSanitizer + UndefinedBehaviorSanitizer
                         (run Python with LD_PRELOAD=$(gcc -print-file-name=libasan.so))
"""
import os

import numpy
from setuptools import Extension, setup

debug = os.environ.get("AUTOSTEER_DEBUG") == "1"
sanitize = os.environ.get("AUTOSTEER_SANITIZE") == "1"

# Several translation units: hidden visibility keeps every symbol but
# PyInit__C inside the shared object (tests/test_kernel.py checks it).
compile_args = ["-std=c11", "-fvisibility=hidden", "-Wall", "-Wextra", "-Wno-unused-parameter",
                "-Wno-missing-field-initializers"]
link_args = []
undef = []
if debug or sanitize:
    compile_args += ["-O0", "-g3", "-fno-omit-frame-pointer"]
    undef.append("NDEBUG")
else:
    compile_args += ["-O3"]
if sanitize:
    flags = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]
    compile_args += flags
    link_args += flags

setup(
    ext_modules=[
        Extension(
            "autosteer._C",
            sources=[
                "csrc/module.c",
                "csrc/common.c",
                "csrc/apply.c",
                "csrc/schedule_type.c",
                "csrc/tracker.c",
                "csrc/weights.c",
                "csrc/hook.c",
            ],
            depends=["csrc/module.h", "csrc/view.h", "csrc/dlpack.h", "csrc/schedule.h", "csrc/kernel.h"],
            include_dirs=["csrc", numpy.get_include()],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            undef_macros=undef,
            libraries=["m"],
        )
    ]
)
