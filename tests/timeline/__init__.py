"""Tests of rewind_daemon/timeline/."""
