"""Tests of rewind_daemon/guard/."""
