"""Tests of rewind_daemon/cli/."""
