"""The approval gateway of a session: harness-sh, consoles and the network process ask here."""

from __future__ import annotations
