"""Fixtures the reliability tests share with the feature tests they stand beside."""

from tests.test_serve import served

__all__ = ["served"]
