"""Policy registry, off-policy estimators, replay, gating and the operator CLI."""
