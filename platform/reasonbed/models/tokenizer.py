"""A byte-level BPE tokenizer trained offline, for the tiny models of the model factory.

`train_bpe_tokenizer(special_tokens, vocab_size)` trains a `tokenizers` BPE with the Qwen2
pre-tokenizer (the same regex split, byte-level alphabet, NFC normalizer and decoder as
`transformers.Qwen2Tokenizer`) on a small built-in English corpus that holds DomainBed class names,
domain names, the classification prompt and the reasoning-chain tags, and on every template of the
pretraining corpus (`reasonbed.models.corpus.tokenizer_texts`), so that the tiny models can spell
everything the platform asks and answers, in few tokens. The special tokens come first (ids 0..n-1), in the
order given. Training is deterministic: the same arguments give the same vocabulary and merges.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

# The pre-tokenization regex of Qwen2's tokenizer (transformers.models.qwen2.tokenization_qwen2).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

REASONING_TAGS = ("<SUMMARY>", "<CAPTION>", "<REASONING>", "<REFLECTION>", "<CONCLUSION>")

# Class names of PACS, VLCS, OfficeHome, TerraIncognita and a few DomainNet ones.
CLASS_NAMES = (
    "dog elephant giraffe guitar horse house person bird car chair cat bobcat coyote empty opossum "
    "rabbit raccoon squirrel alarm clock backpack batteries bed bike bottle bucket calculator calendar "
    "candles computer couch curtains desk lamp drill eraser exit sign fan file cabinet flipflops flowers "
    "folder fork glasses hammer helmet kettle keyboard knives lamp shade laptop marker monitor mop mouse "
    "mug notebook oven pan paper clip pen pencil postit notes printer push pin radio refrigerator ruler "
    "scissors screwdriver shelf sink sneakers soda speaker spoon table telephone toothbrush toys trash can "
    "tv webcam airplane apple banana bicycle boat bus cow fish flower truck tree zebra"
)

DOMAIN_WORDS = (
    "photo art painting cartoon sketch clipart product real world caltech labelme sun voc location "
    "camera trap infrared night day quickdraw infograph style domain texture shape color background"
)

_SENTENCES = """\
What type of object is in this photo? Choose from the following options: {classes}.
Answer with the option's name only. The answer is {cls}.
Describe the image step by step, then give the class of the object.
<SUMMARY> I will describe the image, reason about its visual features, and decide which class it shows. </SUMMARY>
<CAPTION> The image shows a {cls} in the style of a {domain}. The {cls} is in the center of the picture, \
with a plain background and soft colors. </CAPTION>
<REASONING> The shape, the texture and the parts that are visible are typical of a {cls}. The style of \
the picture is {domain}, which changes colors and textures but not the shape of the object. </REASONING>
<REFLECTION> Other options such as {other} have a different shape, so they do not match. The evidence \
is consistent with a {cls}. </REFLECTION>
<CONCLUSION> {cls} </CONCLUSION>
"""

_PROSE = """\
A small dog runs across the green grass in the park, and a brown horse stands near the old wooden house.
The elephant has a long trunk, large ears and grey skin; the giraffe has a very long neck and spotted fur.
A person plays the guitar on a stage under bright lights, while the audience watches in silence.
Animals captured by camera traps at night appear in black and white, often blurred by motion.
Paintings, cartoons, sketches and photos can show the same object with very different colors and lines.
Domain generalization asks a model to recognize objects in styles it has never seen during training.
The quick brown fox jumps over the lazy dog. One, two, three, four, five, six, seven, eight, nine, ten.
Yes. No. The correct option is shown above. Please think carefully before you answer the question.
"""


def corpus() -> str:
    """The built-in English training text and the pretraining corpus' templates (deterministic)."""
    from reasonbed.models.corpus import tokenizer_texts

    classes = CLASS_NAMES.split()
    domains = DOMAIN_WORDS.split()
    lines = [_PROSE, CLASS_NAMES, DOMAIN_WORDS, " ".join(REASONING_TAGS)]
    for index, cls in enumerate(classes):
        lines.append(
            _SENTENCES.format(
                classes=", ".join(classes[index : index + 7]),
                cls=cls,
                domain=domains[index % len(domains)],
                other=classes[(index + 3) % len(classes)],
            )
        )
    lines.extend(tokenizer_texts())
    return "\n".join(lines)


def train_bpe_tokenizer(special_tokens: list[str], vocab_size: int = 1024) -> Tokenizer:
    """Train a byte-level BPE on the built-in corpus; `special_tokens` get ids 0..len-1 in order.

    The returned tokenizer may have fewer than `vocab_size` entries when the corpus runs out of
    merges. The reasoning tags are learned as ordinary text (they are not special tokens).
    """
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    text = corpus()
    tokenizer.train_from_iterator(text.splitlines(), trainer=trainer)
    return tokenizer
