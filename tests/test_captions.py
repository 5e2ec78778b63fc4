"""Captions from labels and measured attributes, and the word-level tokenizer (issue: text to image)."""

from __future__ import annotations

import pytest
import torch

from conftest import require
from genzoo.datasets import attributes, captions, importers, load
from genzoo.errors import ConfigError


def bar(width: int, shear: float = 0.0, height: int = 16) -> torch.Tensor:
    """A uint8 (1, 1, 28, 28) vertical stroke `width` pixels wide whose top is shifted right by `shear` per row."""
    x = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    top = (28 - height) // 2
    for r in range(top, top + height):
        c = round(12 + shear * (top + height - 1 - r))
        x[0, 0, r, c:c + width] = 255
    return x


def test_each_measure_orders_simple_strokes_as_its_words_say():
    assert attributes.thickness(bar(1)) < attributes.thickness(bar(3)) < attributes.thickness(bar(5))
    assert attributes.slant(bar(3, 0.3)) > 0.2 and attributes.slant(bar(3, -0.3)) < -0.2
    assert abs(attributes.slant(bar(3))) < 1e-6
    assert attributes.size(bar(3, height=8)) < attributes.size(bar(3, height=16)) == 3 * 16
    float_images = bar(3).float() / 127.5 - 1  # the harness's [-1, 1] images give the same measures
    assert attributes.thickness(float_images) == attributes.thickness(bar(3))
    empty = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)  # no ink: defined, no NaN
    assert all(torch.isfinite(v).all() for v in attributes.values("mnist", empty).values())


@pytest.mark.real_data
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_every_attribute_bin_holds_at_least_15_percent_of_real_images(name):
    require(importers.mnist_source() if name == "mnist" else importers.fashion_mnist_source(),
            importers.MNIST_INSTALL if name == "mnist" else importers.FASHION_MNIST_INSTALL)
    for split in ("train", "test"):
        data = load(name, split)
        for attr, bins in attributes.measure(name, data.images).items():
            share = bins.bincount(minlength=3).float() / len(bins)
            assert share.min() >= 0.15, (name, split, attr, share.tolist())


@pytest.mark.real_data
def test_captions_of_real_digits_round_trip_and_use_every_template():
    require(importers.mnist_source(), importers.MNIST_INSTALL)
    data = load("mnist", "test")
    images, labels = data.images[:2000], data.labels[:2000]
    caps = captions.for_images("mnist", images, labels, seed=0)
    tok = captions.Tokenizer()
    for c in caps:
        assert tok.decode(tok.encode(c)) == c
    assert "" in caps and any(c.startswith("something ") for c in caps) and any(c.startswith("the number ") for c in caps)
    bins = attributes.measure("mnist", images)
    for i, c in enumerate(caps[:200]):  # the words name the image's own label and attribute bins
        if c.startswith("a ") and "," in c:  # "a {thickness}, {slant} {label}"
            assert c.endswith(captions.DIGITS[int(labels[i])])
            assert c.split(",")[0][2:] in captions.SYNONYMS["thickness"][int(bins["thickness"][i])]


def test_captions_are_deterministic_per_seed_and_vary_between_images():
    images = torch.cat([bar(w, s) for w in (1, 3, 5) for s in (-0.3, 0.0, 0.3)])  # (9, 1, 28, 28)
    labels = torch.arange(9)
    a = captions.for_images("mnist", images, labels, seed=0)
    assert a == captions.for_images("mnist", images, labels, seed=0)
    assert a != captions.for_images("mnist", images, labels, seed=1)
    assert len(set(a)) > 5
    fashion = captions.for_images("fashion-mnist", images, labels, seed=0)
    tok = captions.Tokenizer()
    assert [tok.decode(tok.encode(c)) for c in fashion] == fashion


def test_an_unknown_word_stops_with_one_line_naming_it_and_the_nearest_words():
    tok = captions.Tokenizer()
    with pytest.raises(ConfigError, match=r"unknown word 'thik'.*nearest known words: thick") as e:
        tok.encode("a thik seven")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="at most 14 fit"):
        tok.encode(" ".join(["seven"] * 15))
    with pytest.raises(ConfigError, match="captions exist for mnist, fashion-mnist"):
        captions.for_images("cifar10", bar(2), torch.zeros(1, dtype=torch.long))


def test_the_tokenizer_pads_to_its_context_with_bos_and_eos():
    tok = captions.Tokenizer(context=8)
    ids = tok.encode("A Thick,  right-leaning 7!")
    assert ids.shape == (8,) and ids[0] == tok.bos and tok.decode(ids) == "a thick, right-leaning 7"
    assert (ids == tok.eos).sum() == 1 and ids[-1] == tok.pad
    assert tok.encode("").tolist()[:3] == [tok.bos, tok.eos, tok.pad]
    assert tok.encode_batch(["a 7", "the number seven"]).shape == (2, 8)
    assert len(tok) == len(set(tok.vocab)) < 100


@pytest.mark.real_data
def test_held_out_prompts_are_the_captions_of_test_images_and_follow_their_distribution():
    """The default evaluation prompts of a text run: image i's own class and measured bins, in the captions'
    first template; unlike the uniform set, their bins are as frequent as in the data."""
    from genzoo.evaluation import text

    require(importers.mnist_source(), importers.MNIST_INSTALL)
    test = load("mnist", "test")
    held_out = text.evaluation_prompts("mnist", 600)
    assert torch.equal(held_out.labels, torch.arange(600) % 10), "the classes cycle, as the class runs' labels"
    images, labels = text.heldout_images("mnist", 600)
    sevens = test.images[test.labels == 7]
    assert torch.equal(images[7], sevens[0]) and torch.equal(images[17], sevens[1]), "the k-th image of its class"
    measured = attributes.measure("mnist", images)
    assert all(torch.equal(held_out.bins[a], measured[a]) for a in ("thickness", "slant"))
    i = int((held_out.labels == 7).nonzero()[0])
    words = {a: captions.SYNONYMS[a][int(held_out.bins[a][i])][0] for a in ("thickness", "slant")}
    assert held_out.texts[i] == captions.TEMPLATES["mnist"][0][1].format(label="seven", numeral=7, **words)
    n_zeros = int((test.labels == 0).sum())
    assert text.evaluation_prompts("mnist", 10 * n_zeros + 1).texts[-1] == held_out.texts[0], "cycled past the class"
    uniform = text.evaluation_prompts("mnist", 900, "uniform")
    assert all(torch.bincount(b, minlength=3).tolist() == [300] * 3 for b in uniform.bins.values())
    label = text.evaluation_prompts("mnist", 600, "label")  # the same images' classes, nothing else asked
    assert torch.equal(label.labels, held_out.labels) and label.bins == {}
    assert label.texts[i] == "the number seven", "the label-only template of the training captions"
    assert "the number {label}" in [t for _, t in captions.TEMPLATES["mnist"]]
    with pytest.raises(ConfigError, match="unknown prompt set 'coco'; choose from: heldout, uniform, label"):
        text.evaluation_prompts("mnist", 10, "coco")
