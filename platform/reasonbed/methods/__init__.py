"""Training methods: each a config dataclass plus what it trains on (see reasonbed.methods.base).

Register a new method with one line below (a dotted path, imported when chosen); the parametrised
learning test in tests/test_methods.py then runs it.
"""

from reasonbed.methods.base import METHODS, Method, Pathway

METHODS.add("direct", "reasonbed.methods.direct:DirectMethod")
METHODS.add("reasoning", "reasonbed.methods.reasoning:ReasoningMethod")
METHODS.add("mtct", "reasonbed.methods.mtct:MTCTMethod")
METHODS.add("sarr", "reasonbed.methods.sarr:SARRMethod")
METHODS.add("grpo", "reasonbed.methods.grpo:GRPOMethod")
METHODS.add("zero_shot", "reasonbed.methods.zero_shot:ZeroShotMethod")

__all__ = ["METHODS", "Method", "Pathway"]
