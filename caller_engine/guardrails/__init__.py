"""Dialing guardrails: calling hours in the callee's local time, the do-not-call list, the
per-number frequency cap."""
