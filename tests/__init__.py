"""The kiosk test suite."""
