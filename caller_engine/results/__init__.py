"""Getting each call's result to the orchestrator: the outbox, its delivery worker, signing."""
