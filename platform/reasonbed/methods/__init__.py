"""Training methods: each a config dataclass plus the pathways (prompt -> target) it trains on.

Register a new method with one line below (a dotted path, imported when chosen); the parametrised
smoke test in tests/test_methods.py then runs it.
"""

from reasonbed.methods.base import METHODS, Method, Pathway

METHODS.add("direct", "reasonbed.methods.direct:DirectMethod")
METHODS.add("reasoning", "reasonbed.methods.reasoning:ReasoningMethod")
METHODS.add("mtct", "reasonbed.methods.mtct:MTCTMethod")
METHODS.add("sarr", "reasonbed.methods.sarr:SARRMethod")
METHODS.add("grpo", "reasonbed.methods.grpo:GRPOMethod")

__all__ = ["METHODS", "Method", "Pathway"]
