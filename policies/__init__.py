"""Policy registry, off-policy estimators, replay, gating and the operator CLI.

From a notebook: ``policies.evaluate("candidate-id", config="examples/telecom.toml")``.
"""

from policies.operations import evaluate

__all__ = ["evaluate"]
