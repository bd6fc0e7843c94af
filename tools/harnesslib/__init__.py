"""The test harness: installs and runs real servers on 127.0.0.1 (see docs/testing.md)."""
