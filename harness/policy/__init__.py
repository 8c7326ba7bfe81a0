"""Ground floor: plain values for modes, rules and the sandbox plan."""

from __future__ import annotations
