"""Test doubles that are real implementations: a loopback fake LLM upstream."""

from pointsman.testing.upstream import Behaviour, FakeUpstream, ReceivedRequest

__all__ = ["Behaviour", "FakeUpstream", "ReceivedRequest"]
