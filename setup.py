"""The build's one part that pyproject.toml cannot say: the optional C modules.

rewind_daemon/_termtext.c (the text of recorded output and redaction's word
search, several times faster), rewind_daemon/capture/_hidden.c (the lines
of output its text does not show, for redaction's first pass) and
rewind_daemon/recorder/_relay.c (the recorder's hot loop) are built where
a C compiler and Python's headers are; where they are not, the install goes on
without them and rw uses the same code in Python (`rw doctor` says which).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "rewind_daemon._termtext",
            ["rewind_daemon/_termtext.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        ),
        Extension(
            "rewind_daemon.capture._hidden",
            ["rewind_daemon/capture/_hidden.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        ),
        Extension(
            "rewind_daemon.recorder._relay",
            ["rewind_daemon/recorder/_relay.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        ),
    ]
)
