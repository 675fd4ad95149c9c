"""Real servers the tests start on free loopback ports, and stop by their own PID."""
