"""Tests of rewind_daemon/checkpoints/."""
