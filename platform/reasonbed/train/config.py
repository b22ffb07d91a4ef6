"""The training job's config: data split, model and LoRA, method, optimisation, evaluation, Ray."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from reasonbed.config import ConfigError
from reasonbed.data.catalog import DataConfig
from reasonbed.models.configs import LoraConfig, ModelConfig
from reasonbed.ray_runtime import check_custom_resources
from reasonbed.tracking import TRACKING_KEYS, TrackingConfig


@dataclass
class OptimConfig:
    """AdamW with warmup and a schedule (RD-MLDG: lr 5e-4, batch 128, 3 epochs per stage)."""

    lr: float = 5e-4  # peak learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    batch_size: int = 8  # global batch (all workers, all accumulation steps)
    grad_accum: int = 1  # micro-batches per optimizer step on each worker
    epochs: float = 3.0  # passes over the training images (fractions allowed)
    max_steps: int = 0  # stop after this many optimizer steps (0 = from epochs)
    warmup_ratio: float = 0.1  # fraction of steps with linear warmup
    schedule: Literal["cosine", "linear", "constant"] = "cosine"  # after warmup
    max_grad_norm: float = 1.0  # gradient clipping (0 = off)
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on GPUs that support it

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or self.grad_accum < 1 or self.epochs <= 0 or self.max_steps < 0:
            raise ConfigError(f"optim: lr ({self.lr}), batch_size ({self.batch_size}), grad_accum "
                              f"({self.grad_accum}), epochs ({self.epochs}) must be positive, max_steps >= 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"optim.warmup_ratio: value {self.warmup_ratio!r} must be in [0, 1)")


@dataclass
class EvalConfig:
    """Per-domain accuracy every `every` steps and at the end (DomainBed: every domain split in/out)."""

    every: int = 50  # evaluate (and checkpoint) every N optimizer steps; 0 = only at the end
    at_start: bool = False  # also evaluate the untrained model (step 0) before the first step
    max_per_domain: int = 0  # cap images per (domain, part) evaluated (0 = all); seeded choice
    in_parts: bool = False  # also evaluate the source domains' training (in) parts; selection never uses them
    direct: bool = True  # evaluate with the classification prompt
    reasoning: bool = False  # also evaluate with the reasoning prompt (conclusion parsed; slower)
    # The prompt whose accuracy is val_acc / test_acc (what selection uses and tables report):
    # auto = the method's own (reasoning for `reasoning`, the policy's prompt for `grpo`, else direct).
    select_on: Literal["auto", "direct", "reasoning"] = "auto"
    direct_max_tokens: int = 12  # generation budget of a direct answer (an option name)
    reasoning_max_tokens: int = 512  # generation budget of a reasoning chain (the teacher configs write up to 512; cut chains are counted: truncated/P)
    batch_size: int = 16  # images per generate call

    def __post_init__(self) -> None:
        if self.every < 0 or self.max_per_domain < 0 or self.batch_size < 1:
            raise ConfigError("eval: every and max_per_domain must be >= 0, batch_size >= 1")
        if self.direct_max_tokens < 1 or self.reasoning_max_tokens < 1:
            raise ConfigError(f"eval: direct_max_tokens ({self.direct_max_tokens}) and reasoning_max_tokens "
                              f"({self.reasoning_max_tokens}) must be >= 1")
        if not (self.direct or self.reasoning):
            raise ConfigError("eval: at least one of eval.direct and eval.reasoning must be true")


@dataclass
class ScaleConfig:
    """Ray Train workers and their resources."""

    num_workers: int = 1  # data-parallel workers (DDP: gloo on CPU, NCCL on GPU)
    use_gpu: bool = False  # one GPU per worker
    cpus_per_worker: float = 1.0  # CPUs per worker
    # ddp (every worker holds the whole model). fsdp is refused until adapter saving, evaluation and GRPO's
    # reference pass gather sharded parameters; with LoRA, DDP fits 7-8B models (see the memory estimate).
    strategy: Literal["ddp", "fsdp"] = "ddp"
    # Custom Ray resources each worker also requests, which pin trainers to a node group: {train_node: 1} on
    # the clusters of cluster/*.yaml (their training nodes offer one unit per GPU); empty: any node.
    resources: dict[str, float] = field(default_factory=dict)
    # Custom Ray resources of each engine actor the run starts (SARR's self-chain engines, GRPO's vLLM rollout
    # actor), which pin them to a node group: {generation_node: 1} on the clusters of cluster/*.yaml.
    engine_resources: dict[str, float] = field(default_factory=dict)
    max_failures: int = 2  # worker-group restarts from the last checkpoint before the run fails
    # Checkpoints kept: the best by val_acc (what training-domain validation chooses) plus always the latest.
    keep_checkpoints: int = 2
    # ray: a Ray Train TorchTrainer (workers, restarts, cloud storage); local: the same worker loop in this
    # process, one worker, checkpoints under run_dir (tests and quick experiments).
    backend: Literal["ray", "local"] = "ray"

    def __post_init__(self) -> None:
        if self.num_workers < 1 or self.cpus_per_worker <= 0 or self.keep_checkpoints < 1:
            raise ConfigError(f"scale: num_workers ({self.num_workers}), cpus_per_worker "
                              f"({self.cpus_per_worker}) and keep_checkpoints ({self.keep_checkpoints}) must be "
                              f"positive")
        if self.strategy == "fsdp":
            raise ConfigError(
                "scale.strategy: fsdp is not supported yet (adapter saving, evaluation and GRPO's reference pass "
                "would read sharded parameters without gathering them): use scale.strategy=ddp; with LoRA a 7-8B "
                "model fits one 40 GB GPU per worker in bfloat16 with gradient checkpointing (the memory estimate "
                "printed before training and by --dry-run gives the figures)")
        check_custom_resources("scale.resources", self.resources)
        check_custom_resources("scale.engine_resources", self.engine_resources)
        if self.backend == "local" and self.num_workers != 1:
            raise ConfigError(f"scale.backend local runs one worker in this process: scale.num_workers "
                              f"{self.num_workers} needs scale.backend=ray")

    def engine_cpus(self, on_ray_train: float) -> float:
        """CPUs asked of Ray by an engine actor the run starts and waits for (SARR's self-chain engine, GRPO's vLLM
        rollouts): none on backend local, where the run holds its CPU in Ray and waits while the engine works, so
        the engine runs on it (asking for one more deadlocked two SARR trials of parallel studies on 2 CPUs, each
        holding one); `on_ray_train` on Ray Train."""
        return 0.0 if self.backend == "local" else on_ray_train


@dataclass
class TrainConfig:
    """One fine-tuning run: a method on a LODO split."""

    method: str = "direct"  # a registered method: direct, reasoning, mtct, sarr, grpo, ...
    method_config: dict[str, Any] = field(default_factory=dict)  # the method's own fields (see its config)
    test_domain: str = ""  # the held-out domain (default: the dataset's first domain)
    data: DataConfig = field(default_factory=DataConfig)  # the dataset and its LODO split
    model: ModelConfig = field(default_factory=ModelConfig)  # the MLLM to fine-tune
    lora: LoraConfig = field(default_factory=LoraConfig)  # the adapters it trains
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimizer, schedule, steps
    eval: EvalConfig = field(default_factory=EvalConfig)  # per-domain evaluation and its cadence
    scale: ScaleConfig = field(default_factory=ScaleConfig)  # Ray Train workers and their resources
    chains: str = ""  # generation output with teacher chains (reasoning, mtct, sarr)
    # Train on chains written with the label shown (generation second_pass=rationalize) too; off: only blind ones.
    allow_label_conditioned: bool = False
    # Methods that train on chains refuse to start when fewer of the training images have a kept chain.
    min_chain_coverage: float = 0.5
    # Start from this LoRA adapter (e.g. an SFT run's adapter): a directory on the driver, copied to the run's
    # storage for the workers, or a URI in object storage (s3://, gs://) the workers read.
    init_adapter: str = ""
    seed: int = 0  # seeds model init of LoRA, data order and chain choice
    run_dir: str = "runs/train"  # where config, metrics.jsonl, adapter and `done` go (local path, on the driver)
    # Ray Train storage for checkpoints and adapters: s3:// or gs:// (required when the Ray cluster has more
    # than one node), or a local path on one machine; default run_dir/ray.
    storage_path: str = ""
    name: str = ""  # run name (default: method-dataset-test_domain-seed)
    ray_address: str = ""  # join this Ray cluster (empty: RAY_ADDRESS or a local Ray)
    fail_at_step: int = 0  # fault injection for tests: the rank-0 worker process exits at this step once
    # A source domain also held out (leave-one-domain-out selection runs): never trained on; all its
    # images are evaluated as part `heldout` (metric heldout_acc). Empty: every source domain trains.
    val_domain: str = ""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)  # MLflow / W&B logging of the finished run

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_chain_coverage <= 1.0:
            raise ConfigError(f"min_chain_coverage: value {self.min_chain_coverage!r} must be in [0, 1]")
        if self.fail_at_step and self.scale.backend == "local":
            raise ConfigError("fail_at_step kills a worker process: it needs scale.backend=ray")
        if self.scale.backend == "local" and "://" in self.storage_path:
            raise ConfigError(f"storage_path {self.storage_path!r}: scale.backend=local keeps checkpoints on a "
                              f"local path; object storage needs scale.backend=ray")
        if self.optim.batch_size % self.scale.num_workers:
            raise ConfigError(
                f"optim.batch_size {self.optim.batch_size} does not divide over scale.num_workers "
                f"{self.scale.num_workers}")
        per_worker = self.optim.batch_size // self.scale.num_workers
        if per_worker % self.optim.grad_accum:
            raise ConfigError(
                f"optim.batch_size {self.optim.batch_size} over {self.scale.num_workers} worker(s) gives "
                f"{per_worker} per worker, which optim.grad_accum {self.optim.grad_accum} does not divide")

    @property
    def micro_batch(self) -> int:
        """Examples per forward/backward pass on one worker."""
        return self.optim.batch_size // self.scale.num_workers // self.optim.grad_accum

    @property
    def run_name(self) -> str:
        """The Ray Train run name: `name`, or method-dataset-test_domain[-v<val_domain>]-s<seed>-<config hash>.

        The hash covers everything that changes what is trained (not where it runs), so two different
        configs never share checkpoints under one default name in the same storage.
        """
        if self.name:
            return self.name
        held = f"-v{self.val_domain}" if self.val_domain else ""
        return f"{self.method}-{self.data.dataset}-{self.test_domain or 'auto'}{held}-s{self.seed}-{config_hash(self)}"


# Keys a rerun into an existing run directory may change (where and how it runs, not what it trains).
RESUMABLE_KEYS = ("ray_address", "fail_at_step", "scale.max_failures", "scale.keep_checkpoints", "run_dir",
                  "storage_path", "name", *TRACKING_KEYS)


def config_hash(cfg: TrainConfig) -> str:
    """A short hash of what a run trains (its config without RESUMABLE_KEYS)."""
    import hashlib
    import json

    from reasonbed.config import flatten, to_dict

    flat = {key: value for key, value in flatten(to_dict(cfg)).items() if key not in RESUMABLE_KEYS}
    return hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:8]
