"""Tests of rewind_daemon/recorder/."""
