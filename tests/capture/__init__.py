"""Tests of rewind_daemon/capture/."""
