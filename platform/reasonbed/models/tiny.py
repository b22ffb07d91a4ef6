"""The offline tiny-model factory: pretrained MLLMs of a real architecture, built on CPU, no hub needed.

`build_tiny_model(family, size, out, seed, pretrained=True)` writes, in Hugging Face format, a model
of the family's real architecture at a tiny (<1M parameters) or small (20-60M) size, a byte-level BPE
tokenizer trained locally (`reasonbed.models.tokenizer`) with the family's special tokens and chat
template, and the family's processor (patch 14, merge 2, images of 56x56 to 224x224 pixels). Both
transformers and vLLM load the result. The `tiny` size is then pretrained (all weights) on the
generated image-text corpus of `reasonbed.models.pretrain` (a few minutes on 2 cores), so it sees and
speaks before any DG method touches it; `pretrained=False` keeps the random initialisation. The
`small` size (throughput benchmarks only) is never pretrained: `pretrained` does not apply to it.

Builds are deterministic (same seed and recipe, same bytes on a machine) and cached: without `out`
the directory is `$REASONBED_CACHE/tiny-models/<family>-<size>[-random]-<hash>` (REASONBED_CACHE
defaults to ~/.cache/reasonbed), where the hash covers the architecture, tokenizer, processor, seed,
pretraining recipe and factory version. A build is written to a temporary sibling directory,
completed with a marker file, and renamed into place, so a directory with the marker is always
complete and is reused as is. A file lock beside the target makes concurrent builds of one model
(tests, Ray workers, sweep trials) build it once: the others wait, then reuse it.

Command line: python -m reasonbed tiny-model --family qwen2_vl --size tiny [--random] [--out DIR]
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reasonbed import storage
from reasonbed.config import ConfigError
from reasonbed.models.families import ModelFamily, get_family
from reasonbed.models.tokenizer import corpus, train_bpe_tokenizer

if TYPE_CHECKING:
    from reasonbed.models.pretrain import PretrainRecipe

FACTORY_VERSION = 3
# The output head is drawn with a larger std than transformers' default (0.02): with a frozen random
# head that small, a tiny model's logits stay near uniform and a LoRA-only fine-tune cannot reach
# confident answers (per-token loss plateaus near 4.4 nats on a 6-class toy task; with 0.1 it falls
# below 0.05 in 50 steps). Pretrained models do not have this problem.
OUTPUT_HEAD_STD = 0.1
SIZES = ("tiny", "small")
PRETRAINED_SIZES = ("tiny",)  # sizes the factory pretrains; the others stay random
TOKENIZER_VOCAB_SIZE = 2048  # target; the built-in corpus yields fewer (about 1,230)
MIN_PIXELS = 56 * 56
MAX_PIXELS = 224 * 224
MARKER = "reasonbed_tiny_model.json"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def tiny_model_spec(family: str, size: str = "tiny", seed: int = 0, pretrained: bool = True,
                    recipe: PretrainRecipe | None = None) -> dict[str, Any]:
    """Everything a build depends on, as plain data (what the cache hash covers).

    `pretrain` holds the recipe when the build pretrains (`pretrained` and a size that is pretrained),
    else None; `recipe` defaults to `reasonbed.models.pretrain.PretrainRecipe()`.
    """
    fam = get_family(family)
    if size not in SIZES:
        raise ConfigError(f"size: value {size!r} is not allowed; allowed: {', '.join(SIZES)}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed: value {seed!r} must be an integer >= 0")
    return {
        "factory_version": FACTORY_VERSION,
        "family": fam.name,
        "size": size,
        "seed": seed,
        "architecture": fam.tiny_spec(size),
        "tokenizer": {"vocab_size": TOKENIZER_VOCAB_SIZE, "corpus_sha256": _sha(corpus()),
                      "special_tokens": list(fam.special_tokens)},
        "processor": {"min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS},
        "output_head_std": OUTPUT_HEAD_STD,
        "chat_template_sha256": _sha(fam.chat_template),
        "transformers": version("transformers"),
        "pretrain": _recipe(recipe).as_dict() if pretrained and size in PRETRAINED_SIZES else None,
    }


def _recipe(recipe: PretrainRecipe | None) -> PretrainRecipe:
    from reasonbed.models.pretrain import PretrainRecipe

    return recipe if recipe is not None else PretrainRecipe()


def tiny_model_hash(spec: dict[str, Any]) -> str:
    """A short stable hash of a spec."""
    return _sha(json.dumps(spec, sort_keys=True))[:12]


def _is_complete(directory: Path, digest: str) -> bool:
    marker = directory / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("hash") == digest
    except (OSError, ValueError):
        return False


def largest_weight_difference(first: str | Path, second: str | Path) -> float:
    """The largest absolute difference between two built models' weights (their `model.safetensors`); a
    ValueError when they do not hold the same tensors."""
    from safetensors.torch import load_file

    a, b = load_file(Path(first) / "model.safetensors"), load_file(Path(second) / "model.safetensors")
    if a.keys() != b.keys():
        raise ValueError(f"{first} and {second} hold different tensors: {sorted(a.keys() ^ b.keys())[:5]}")
    return max(float((a[key] - b[key]).abs().max()) for key in a)


def build_tokenizer(family: ModelFamily) -> Any:
    """The family's transformers tokenizer over a BPE trained on the built-in corpus."""
    import transformers

    trained = train_bpe_tokenizer(list(family.special_tokens), TOKENIZER_VOCAB_SIZE)
    model = json.loads(trained.to_str())["model"]
    merges = [tuple(pair) if isinstance(pair, list) else tuple(pair.split(" ")) for pair in model["merges"]]
    named = {family.eos_token, family.pad_token, *family.named_tokens.values()}
    tokenizer = getattr(transformers, family.tokenizer_class_name)(
        vocab=model["vocab"],
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token=family.eos_token,
        pad_token=family.pad_token,
        extra_special_tokens=[token for token in family.special_tokens if token not in named],
        model_max_length=4096,
        **family.named_tokens,
    )
    tokenizer.chat_template = family.chat_template
    for index, token in enumerate(family.special_tokens):
        if tokenizer.convert_tokens_to_ids(token) != index:
            raise RuntimeError(f"tiny tokenizer: special token {token!r} did not keep id {index}")
    return tokenizer


def instantiate_tiny_model(family: ModelFamily, size: str, tokenizer: Any, seed: int,
                           device: str = "cpu") -> Any:
    """A randomly initialised model of `family` at `size` (on the meta device: shapes only)."""
    import torch

    token_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in family.special_tokens}
    config = family.tiny_config(size, len(tokenizer), token_ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device):
            model = family.model_class(config)
            if device != "meta":
                with torch.no_grad():
                    model.get_output_embeddings().weight.normal_(0.0, OUTPUT_HEAD_STD)
    model.generation_config.bos_token_id = token_ids["<|endoftext|>"]
    model.generation_config.eos_token_id = [token_ids[family.eos_token], token_ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = token_ids[family.pad_token]
    return model.eval()


def count_parameters(family: str, size: str = "tiny") -> int:
    """Total parameters of the factory model of `family` at `size`, counted on the meta device."""
    fam = get_family(family)
    tiny_model_spec(family, size)  # validates size
    model = instantiate_tiny_model(fam, size, build_tokenizer(fam), seed=0, device="meta")
    return sum(parameter.numel() for parameter in model.parameters())


def _write(directory: Path, spec: dict[str, Any], digest: str, recipe: PretrainRecipe | None,
           progress: Callable[[str], None], in_one_process: bool = False) -> None:
    family = get_family(spec["family"])
    tokenizer = build_tokenizer(family)
    model = instantiate_tiny_model(family, spec["size"], tokenizer, spec["seed"])
    processor = family.tiny_processor(tokenizer, MIN_PIXELS, MAX_PIXELS)
    pretraining = None
    if spec["pretrain"] is not None:
        from reasonbed.models.pretrain import pretrain

        pretraining = pretrain(model, processor, _recipe(recipe), spec["seed"], name=f"{spec['family']}-{spec['size']}",
                               progress=progress, in_one_process=in_one_process)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    marker = {"hash": digest, "parameters": parameters, "spec": spec, "pretraining": pretraining,
              "built_by_pid": os.getpid()}
    (directory / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _build_lock(target: Path, progress: Callable[[str], None]) -> Iterator[None]:
    """An exclusive lock on `.<target name>.lock` beside `target`; says so when it has to wait."""
    import fcntl

    with open(target.parent / f".{target.name}.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another process that is building {target}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_tiny_model(family: str, size: str = "tiny", out: str | Path | None = None, seed: int = 0,
                     pretrained: bool = True, recipe: PretrainRecipe | None = None,
                     progress: Callable[[str], None] | None = None, in_one_process: bool = False) -> Path:
    """Build (or reuse) the tiny model of `family` at `size`; returns its directory.

    `pretrained` (the `tiny` size only) pretrains it by `recipe` (default: the factory's recipe), `in_one_process`
    replaying the recipe's data-parallel processes in this one (the same bytes, less CPU, more wall time);
    `progress` receives the pretraining's progress lines (default: stderr). Without `out` the model
    goes to the content-addressed cache directory. With `out`, a complete build with the same hash
    there is reused; an earlier factory build is replaced; any other non-empty directory is left
    alone and raises `ConfigError`. Concurrent builds of one target build it once (a file lock).
    """
    from reasonbed.models.pretrain import stderr_progress

    spec = tiny_model_spec(family, size, seed, pretrained, recipe)
    digest = tiny_model_hash(spec)
    name = f"{family}-{size}-{digest}" if spec["pretrain"] is not None else f"{family}-{size}-random-{digest}"
    target = Path(out) if out is not None else storage.cache_dir() / "tiny-models" / name
    target = target.expanduser().absolute()
    if _is_complete(target, digest):
        return target
    if target.exists() and not target.is_dir():
        raise ConfigError(f"out: {str(target)!r} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).exists():
        raise ConfigError(f"out: directory {str(target)!r} is not empty and holds no tiny-model build")
    target.parent.mkdir(parents=True, exist_ok=True)
    progress = progress or stderr_progress
    with _build_lock(target, progress):
        if _is_complete(target, digest):  # built by the process this one waited for
            return target
        return _build_into(target, spec, digest, recipe, progress, in_one_process)


def _build_into(target: Path, spec: dict[str, Any], digest: str, recipe: PretrainRecipe | None,
                progress: Callable[[str], None], in_one_process: bool = False) -> Path:
    """Write a build into a staging sibling of `target` and rename it into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _write(staging, spec, digest, recipe, progress, in_one_process)
        if target.exists():  # empty, incomplete or stale factory build
            if _is_complete(target, digest):  # another process finished first
                return target
            shutil.rmtree(target)
        try:
            os.rename(staging, target)
        except OSError:
            if _is_complete(target, digest):  # lost a race to a concurrent build
                return target
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
