"""harness: run agents and untrusted commands in a disposable, policy-enforced sandbox."""

from __future__ import annotations

__version__ = "0.1.0"
