"""The optional C module (pyproject.toml holds the rest): rw works without it,
more slowly, where no C compiler or Python headers are (optional=True)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "rewind_daemon.capture._hidden",
            ["rewind_daemon/capture/_hidden.c"],
            optional=True,
        ),
    ]
)
