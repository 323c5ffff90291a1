"""The build's one part that pyproject.toml cannot say: the optional C module.

rewind_daemon/_termtext.c (the text of recorded output and redaction's word
search, several times faster) is built where a C compiler and Python's headers
are; where they are not, the install goes on without it and rw uses the same
code in Python (`rw doctor` says which).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "rewind_daemon._termtext",
            ["rewind_daemon/_termtext.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
