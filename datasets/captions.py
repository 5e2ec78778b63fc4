"""Captions for MNIST and Fashion-MNIST, written from each image's label and its measured attributes, and the
word-level tokenizer of the zoo's text encoder.

    caps = captions.for_images("mnist", images, labels, seed=0)   # one string per image, deterministic
    tok = captions.Tokenizer()
    ids = tok.encode("a thick, right-leaning seven")               # (context,) int64: <bos> words <eos> <pad>...
    tok.decode(ids)                                                # "a thick, right-leaning seven"

Each caption picks one template and one synonym per word with a generator seeded by (seed, image index), so a
split's captions are the same on every machine and every run. Templates name the label and the attributes
(`genzoo.datasets.attributes`) in several ways: both attributes ("a thick, right-leaning seven", "the digit 7,
thin and upright"), size and thickness, the label only ("a 7", "the number seven"), the attributes only
("something thick and slanted left"), and an empty caption (the null prompt of classifier-free guidance).

The tokenizer is word-level over a fixed vocabulary: every word any template or synonym can write, the
digits as numerals and as words, the class names, and `,`. The captions' language is closed (under a
hundred words), so one token per word keeps attention maps readable word by word, and a byte-pair code
would only split words for no gain. A prompt with a word outside the vocabulary stops with one line that
names it and the nearest known words.
"""

from __future__ import annotations

import difflib
import random
import re

import torch

from genzoo.errors import ConfigError

from . import attributes

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CLOTHES = ("t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")

# attribute -> words for each of its three bins (attributes.NAMES order); one is drawn per caption
SYNONYMS = {
    "thickness": (("thin", "light", "fine"), ("regular", "medium"), ("thick", "bold", "heavy")),
    "slant": (("left-leaning", "slanted left"), ("upright", "straight"), ("right-leaning", "slanted right")),
    "size": (("small", "little"), ("medium-sized", "mid-sized"), ("large", "big")),
    "brightness": (("dark",), ("grey", "mid-grey"), ("bright", "pale")),
}

# (weight, template): {label} a name of the class, {numeral} the digit, {ATTRIBUTE} a word for its bin
TEMPLATES = {
    "mnist": ((4, "a {thickness}, {slant} {label}"), (3, "the digit {numeral}, {thickness} and {slant}"),
              (2, "a {size} {thickness} {label}"), (1, "a {numeral}"), (1, "the number {label}"),
              (1, "something {thickness} and {slant}"), (1, "")),
    "fashion-mnist": ((4, "a {brightness}, {size} {label}"), (3, "a {label}, {brightness} and {size}"),
                      (1, "a {label}"), (1, "{label}"), (1, "something {brightness} and {size}"), (1, "")),
}
FILLERS = ("a", "the", "digit", "number", "something", "and", "an", "of", "photo", "drawing", "handwritten")


def caption(dataset: str, label: int, bins: dict[str, int], rng: random.Random) -> str:
    """One caption of an image of class `label` whose attributes fall in `bins` ({name: 0..2})."""
    weights, templates = zip(*TEMPLATES[dataset])
    template = rng.choices(templates, weights)[0]
    words = {name: rng.choice(SYNONYMS[name][b]) for name, b in sorted(bins.items())}
    label_word = DIGITS[label] if dataset == "mnist" else CLOTHES[label]
    return template.format(label=label_word, numeral=label, **words)


def for_images(dataset: str, images: torch.Tensor, labels: torch.Tensor, seed: int = 0,
               index: torch.Tensor | None = None) -> list[str]:
    """A caption for each image (uint8 (N, 1, H, W) or float in [-1, 1]), deterministic in (seed, index): the
    images' indices in their split (default 0..N-1), so an image gets the same caption in any batch."""
    if dataset not in TEMPLATES:
        raise ConfigError(f"captions exist for {', '.join(TEMPLATES)}, not {dataset!r}")
    bins = attributes.measure(dataset, images)
    names = list(bins)
    table = torch.stack([bins[n] for n in names], 1).tolist()  # (N, attributes)
    index = range(len(labels)) if index is None else index.tolist()
    return [caption(dataset, int(y), dict(zip(names, row)), random.Random(f"{seed}-{i}"))
            for i, y, row in zip(index, labels.tolist(), table)]


# ----------------------------------------------------------------------------------------
# the tokenizer

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
WORD = re.compile(r"[a-z0-9][a-z0-9\-']*|,")


def words_of(text: str) -> list[str]:
    """The words of a prompt: lower case, `,` a word of its own, other punctuation and spaces separate."""
    return WORD.findall(text.lower())


def vocabulary() -> tuple[str, ...]:
    """Every word a caption can hold, sorted, after the three special tokens."""
    words = set(FILLERS) | set(DIGITS) | {str(d) for d in range(10)} | {","}
    for name in CLOTHES:
        words |= set(words_of(name))
    for bins in SYNONYMS.values():
        for options in bins:
            for w in options:
                words |= set(words_of(w))
    for templates in TEMPLATES.values():
        for _, t in templates:
            words |= set(words_of(re.sub(r"\{\w+\}", " ", t)))
    return (PAD, BOS, EOS, *sorted(words))


class Tokenizer:
    """Word-level, fixed vocabulary: text -> (context,) ids [<bos>, words..., <eos>, <pad>...] and back."""

    def __init__(self, context: int = 16):
        self.vocab = vocabulary()
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.context = context  # tokens per prompt, <bos> and <eos> included
        self.pad, self.bos, self.eos = (self.index[t] for t in (PAD, BOS, EOS))

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> torch.Tensor:
        words = words_of(text)
        unknown = [w for w in words if w not in self.index]
        if unknown:
            w = unknown[0]
            near = difflib.get_close_matches(w, self.vocab[3:], n=3, cutoff=0.5)
            raise ConfigError(f"unknown word {w!r} in the prompt {text!r}; "
                              + (f"nearest known words: {', '.join(near)}" if near else
                                 "the vocabulary is the captions' words (genzoo.datasets.captions.vocabulary())"))
        if len(words) + 2 > self.context:
            raise ConfigError(f"the prompt {text!r} has {len(words)} words; at most {self.context - 2} fit")
        ids = [self.bos, *(self.index[w] for w in words), self.eos]
        return torch.tensor(ids + [self.pad] * (self.context - len(ids)), dtype=torch.long)

    def encode_batch(self, texts: list[str]) -> torch.Tensor:
        """(N, context) int64."""
        return torch.stack([self.encode(t) for t in texts]) if texts else torch.zeros(0, self.context, dtype=torch.long)

    def decode(self, ids: torch.Tensor) -> str:
        words = [self.vocab[i] for i in ids.tolist() if i not in (self.pad, self.bos, self.eos)]
        return " ".join(words).replace(" ,", ",")


def token_fn(dataset: str, data, seed: int, context: int = 16):
    """For a training split `data` (ImageData): dataset indices (B,) -> (B, context) tokens of those images'
    captions, each fixed per (seed, index). The trainer's batches carry them with data.captions=true."""
    tokenizer = Tokenizer(context)
    return lambda idx: tokenizer.encode_batch(for_images(dataset, data.images[idx], data.labels[idx], seed, idx))
