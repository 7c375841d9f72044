"""Slow, obvious reference implementations that the native fast paths are tested against."""
