"""`sarr`: MTCT followed by self-aligned reasoning regularisation rounds (RD-MLDG).

Training is MTCT; after the first stage, each round lets the current model write chains for the
training images with the reasoning prompt (generation engine with the current LoRA adapter), keeps
those whose conclusion names the label (the `kept` flag of reasonbed.generation.validate.judge),
and continues MTCT on them. The rounds are run by
`reasonbed.train.sarr`; this module holds the options and the pathways.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from reasonbed.compat.engines import default_engine, require_vllm
from reasonbed.config import ConfigError
from reasonbed.methods.mtct import MTCTMethod


@dataclass
class SARRConfig:
    reasoning_weight: float = 1.0  # weight of the reasoning pathway (as in MTCT)
    rounds: int = 3  # self-generation rounds after the MTCT stage (RD-MLDG: N=3)
    epochs_per_round: float = 3.0  # training epochs on each round's self-chains (RD-MLDG: 3 per stage)
    # Engine that writes the self-chains: vLLM with the LoRA adapter (default; hf where vLLM is not installed).
    engine: Literal["vllm", "hf"] = field(default_factory=default_engine)
    candidates: int = 2  # chains sampled per training image per round
    temperature: float = 0.7  # sampling temperature of self-generation
    max_tokens: int = 256  # generation budget of a self-chain
    keep_teacher_chains: bool = False  # also keep the teacher's chains beside the self-chains

    def __post_init__(self) -> None:
        require_vllm(self.engine, "method_config.engine")
        if self.rounds < 0 or self.epochs_per_round <= 0 or self.candidates < 1 or self.reasoning_weight < 0:
            raise ConfigError(f"method_config: rounds ({self.rounds}) >= 0, epochs_per_round "
                              f"({self.epochs_per_round}) > 0, candidates ({self.candidates}) >= 1 required")


class SARRMethod(MTCTMethod):
    name = "sarr"
    config_class = SARRConfig
    driver = "reasonbed.train.sarr:run_sarr"
