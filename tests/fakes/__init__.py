"""Fake provider servers for SHVYA's tests: real HTTP on 127.0.0.1, recording, told to fail."""
