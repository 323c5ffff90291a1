"""Commands that move sessions in and out of rw: diff, export, import."""

from __future__ import annotations
