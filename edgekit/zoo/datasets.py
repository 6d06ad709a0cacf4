"""Data sets of the reference models, built from data that ships inside installed packages.

Nothing is downloaded: images, tables and targets come from scikit-learn's bundled data sets,
and the text corpus is made of the documentation strings of Python's standard library,
labelled by the family of the module that defines them. Every split is a fixed, seeded
permutation; the calibration set is the head of the (already shuffled) training split.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from edgekit.errors import BadInputError, EdgekitError
from edgekit.io.data import Dataset

TEST_FRACTION = 0.2
CALIB_SIZE = 256

# Text corpus: module family -> standard-library modules whose docstrings carry that label.
# Modules missing from the running Python version are skipped, so the corpus is fixed per version.
_FAMILY_MODULES = {
    "compression": "bz2 gzip lzma tarfile zipfile zipimport zlib",
    "concurrency": (
        "asyncio concurrent.futures concurrent.futures.process concurrent.futures.thread "
        "contextvars multiprocessing multiprocessing.connection multiprocessing.managers "
        "multiprocessing.pool multiprocessing.queues multiprocessing.synchronize queue "
        "sched selectors subprocess threading"
    ),
    "debugging": (
        "ast bdb cProfile dis doctest faulthandler inspect logging logging.handlers pdb "
        "profile pstats timeit trace traceback tracemalloc unittest unittest.case "
        "unittest.loader unittest.mock unittest.result unittest.runner warnings"
    ),
    "filesystem": "filecmp fileinput fnmatch glob os pathlib posixpath shutil stat tempfile",
    "network": (
        "email email.feedparser email.generator email.header email.headerregistry "
        "email.message email.mime.multipart email.mime.text email.parser email.policy "
        "email.utils ftplib http.client http.cookiejar http.cookies http.server imaplib "
        "ipaddress mailbox mimetypes poplib smtplib socket socketserver ssl urllib.error "
        "urllib.parse urllib.request urllib.robotparser wsgiref.handlers "
        "wsgiref.simple_server xmlrpc.client xmlrpc.server"
    ),
    "numeric": "cmath decimal fractions math numbers operator random statistics",
    "serialization": (
        "base64 binascii configparser copyreg csv json json.decoder json.encoder marshal "
        "pickle plistlib shelve struct tomllib xml.dom.minidom xml.etree.ElementTree "
        "xml.sax xml.sax.handler xml.sax.saxutils"
    ),
    "text": (
        "codecs difflib gettext html html.parser locale re reprlib shlex string "
        "stringprep textwrap unicodedata"
    ),
    "time": "calendar datetime time zoneinfo",
}
TEXT_FAMILIES: dict[str, tuple[str, ...]] = {
    k: tuple(v.split()) for k, v in _FAMILY_MODULES.items()
}
TEXT_CLASSES: tuple[str, ...] = tuple(sorted(TEXT_FAMILIES))
# Embedding rows: 0 = padding, 1 = unknown, then the most frequent words of the training split.
TEXT_VOCAB_SIZE = 4096
TEXT_LENGTH = 64
PAD_ID, UNK_ID = 0, 1
_MIN_DOC_CHARS = 40
_MAX_PER_CLASS = 500
_TOKEN = re.compile(r"[a-z][a-z0-9_]*|[0-9]+")


@dataclass(frozen=True)
class Splits:
    """A reference model's data: training split, calibration subset of it, held-out test split."""

    train: Dataset
    calib: Dataset
    test: Dataset


def split_index(
    n: int, seed: int, test_fraction: float = TEST_FRACTION
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded permutation of ``range(n)`` cut into (train, test) indices."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    return order[n_test:], order[:n_test]


# --- images and tables -------------------------------------------------------------------------


def digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 handwritten digits, bilinearly upsampled to ``size``×``size``.

    Returns ``x`` float32 ``(N, 1, size, size)`` in [0, 1] and ``y`` int64 ``(N,)``.
    """
    import torch
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    up = torch.nn.functional.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False
    )
    return up.clamp_(0.0, 1.0).numpy(), bunch.target.astype(np.int64)


def breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's breast cancer table: ``x`` float64 ``(569, 30)``, ``y`` int64 in {0, 1}."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return bunch.data.astype(np.float64), bunch.target.astype(np.int64)


def diabetes() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's diabetes table (features already centred and scaled by scikit-learn).

    Returns ``x`` float32 ``(442, 10)`` and ``y`` float32 ``(442,)``: disease progression one year
    after baseline, in its original units (about 25 to 346).
    """
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    return bunch.data.astype(np.float32), bunch.target.astype(np.float32)


# --- text --------------------------------------------------------------------------------------


# Run in a fresh interpreter without site-packages (python -I -S): docstrings are read from the
# pristine standard library, never from objects the host process (a test runner, a debugger) has
# patched or imported lazily.
_COLLECTOR = """
import importlib, inspect, json, sys

def docstrings(module_name):
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return []
    docs = []
    for name in sorted(vars(module)):
        obj = vars(module)[name]
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        docs.append(inspect.getdoc(obj) or "")
        if inspect.isclass(obj):
            for attr in sorted(vars(obj)):
                member = vars(obj)[attr]
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                documented = inspect.isroutine(member) or isinstance(member, property)
                if not attr.startswith("_") and documented:
                    docs.append(inspect.cleandoc(member.__doc__ or ""))
    return docs

families = json.loads(sys.stdin.read())
json.dump({f: [d for m in mods for d in docstrings(m)] for f, mods in families.items()}, sys.stdout)
"""


def _collect_docstrings() -> dict[str, list[str]]:
    """Family → raw docstrings of its modules' public classes, functions and their own methods."""
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _COLLECTOR],
        input=json.dumps({f: list(m) for f, m in TEXT_FAMILIES.items()}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise EdgekitError(
            f"could not read the standard library's docstrings: {proc.stderr.strip()[-300:]}"
        )
    result: dict[str, list[str]] = json.loads(proc.stdout)
    return result


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def stdlib_docstrings() -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The labelled text corpus: (texts, class indices into :data:`TEXT_CLASSES`).

    Whitespace-normalised, lower-cased docstrings of at least 40 characters, read in a fresh
    interpreter; a text found under two families is dropped, duplicates are kept once. Each class
    keeps at most 500 texts, chosen by SHA-256 of the text, so the result depends only on the
    Python version, never on hash, import order or the state of the calling process.
    """
    raw = _collect_docstrings()
    families: dict[str, set[str]] = {}
    for family in TEXT_CLASSES:
        for doc in raw[family]:
            text = " ".join(doc.split()).lower()
            if len(text) >= _MIN_DOC_CHARS:
                families.setdefault(text, set()).add(family)
    per_class: dict[str, list[str]] = {family: [] for family in TEXT_CLASSES}
    for text, found in families.items():
        if len(found) == 1:
            per_class[next(iter(found))].append(text)
    pairs: list[tuple[str, int]] = []
    for label, family in enumerate(TEXT_CLASSES):
        kept = sorted(per_class[family], key=_digest)[:_MAX_PER_CLASS]
        pairs.extend((text, label) for text in kept)
    pairs.sort(key=lambda p: _digest(p[0]))
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def tokenize(text: str) -> list[str]:
    """Lower-cased words (letters, digits, underscores) and numbers."""
    return _TOKEN.findall(text.lower())


def build_vocab(texts: Iterable[str], size: int = TEXT_VOCAB_SIZE) -> dict[str, int]:
    """Word → id for the ``size - 2`` most frequent words (ties alphabetical); ids start at 2."""
    counts = Counter(tok for text in texts for tok in tokenize(text))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: size - 2]
    return {word: i + 2 for i, (word, _) in enumerate(ranked)}


def encode(texts: Sequence[str], vocab: dict[str, int], length: int = TEXT_LENGTH) -> np.ndarray:
    """Token ids int64 ``(N, length)``: truncated, padded with 0, unknown words as 1."""
    ids = np.full((len(texts), length), PAD_ID, dtype=np.int64)
    for row, text in enumerate(texts):
        toks = [vocab.get(tok, UNK_ID) for tok in tokenize(text)[:length]]
        ids[row, : len(toks)] = toks
    return ids


def text_vocab(seed: int = 0) -> dict[str, int]:
    """The vocabulary of the text classifier trained with ``seed`` (built from its train split)."""
    texts, _ = stdlib_docstrings()
    train_idx, _ = split_index(len(texts), seed)
    return build_vocab([texts[i] for i in sorted(train_idx)])


def text_corpus(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The text corpus encoded with the vocabulary of ``seed``'s training split: token ids int64
    ``(N, TEXT_LENGTH)`` (right-padded with 0) and family labels int64 ``(N,)``."""
    texts, labels = stdlib_docstrings()
    train_idx, _ = split_index(len(texts), seed)
    vocab = build_vocab([texts[i] for i in sorted(train_idx)])
    return encode(texts, vocab), np.asarray(labels, dtype=np.int64)


# --- digit strings -----------------------------------------------------------------------------

# Text lines of scikit-learn digits placed side by side: ink 1, background 0, fixed height,
# width growing with the number of digits. Labels are the digits, padded with -1; the CTC blank
# is class 10.
LINE_HEIGHT = 32
GLYPH_HEIGHT, GLYPH_WIDTH = 24, 16
LINE_DIGITS = (3, 8)  # shortest and longest string
LINE_BLANK = 10
LINE_BACKGROUND = 0.0
_LINES = {"train": 2000, "test": 600}


def _glyphs(images: np.ndarray) -> np.ndarray:
    """8×8 digits (0..16) → float32 ``(N, GLYPH_HEIGHT, GLYPH_WIDTH)`` in [0, 1], bilinear."""
    import torch

    t = torch.from_numpy(images.astype(np.float32) / 16.0).unsqueeze(1)
    up = torch.nn.functional.interpolate(
        t, size=(GLYPH_HEIGHT, GLYPH_WIDTH), mode="bilinear", align_corners=False
    )
    return up.clamp_(0.0, 1.0)[:, 0].numpy()


def digit_lines(
    glyphs: np.ndarray, digits_of: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` lines of 3 to 8 random glyphs with jittered spacing and baseline.

    Returns ``x`` float32 ``(n, 1, LINE_HEIGHT, Wmax)`` right-padded with the background,
    ``x_length`` int64 ``(n,)`` (each line's real width) and ``y`` int64 ``(n, 8)`` (the digits,
    padded with -1).
    """
    lo, hi = LINE_DIGITS
    lines, widths = [], []
    y = np.full((n, hi), -1, dtype=np.int64)
    for row in range(n):
        count = int(rng.integers(lo, hi + 1))
        picks = rng.integers(0, len(glyphs), size=count)
        canvas = np.full((LINE_HEIGHT, 2 + hi * (GLYPH_WIDTH + 2) + 8), LINE_BACKGROUND, np.float32)
        left = int(rng.integers(1, 5))
        for k, pick in enumerate(picks):
            top = int(rng.integers(1, LINE_HEIGHT - GLYPH_HEIGHT))
            region = canvas[top : top + GLYPH_HEIGHT, left : left + GLYPH_WIDTH]
            np.maximum(region, glyphs[pick], out=region)
            y[row, k] = digits_of[pick]
            left += GLYPH_WIDTH + int(rng.integers(-2, 3))
        width = left + int(rng.integers(2, 7))
        lines.append(canvas[:, :width])
        widths.append(width)
    x = np.full((n, 1, LINE_HEIGHT, max(widths)), LINE_BACKGROUND, np.float32)
    for row, line in enumerate(lines):
        x[row, 0, :, : line.shape[1]] = line
    return x, np.asarray(widths, dtype=np.int64), y


def _digit_line_splits(name: str, seed: int) -> Splits:
    """Lines for training from the training digits, held-out lines from the held-out digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    glyphs, digits_of = _glyphs(bunch.images), bunch.target.astype(np.int64)
    meta = {
        "source": "sklearn.datasets.load_digits, 3 to 8 digits side by side at "
        f"{GLYPH_HEIGHT}x{GLYPH_WIDTH} on a {LINE_HEIGHT}-pixel line; labels padded with -1",
        "blank": str(LINE_BLANK),
    }
    parts: dict[str, Dataset] = {}
    for part, idx in zip(("train", "test"), split_index(len(glyphs), seed), strict=True):
        rng = np.random.default_rng([seed, len(parts)])
        x, widths, y = digit_lines(glyphs[idx], digits_of[idx], _LINES[part], rng)
        parts[part] = Dataset({"x": x}, y, "sequence", name, meta=meta, lengths={"x": widths})
    return Splits(
        train=_renamed(parts["train"], "train"),
        calib=_renamed(parts["train"].head(CALIB_SIZE), "calib"),
        test=_renamed(parts["test"], "test"),
    )


# --- splits ------------------------------------------------------------------------------------


def _splits(full: Dataset, seed: int) -> Splits:
    train_idx, test_idx = split_index(len(full), seed)
    train = full.subset(train_idx)
    return Splits(
        train=_renamed(train, "train"),
        calib=_renamed(train.head(CALIB_SIZE), "calib"),
        test=_renamed(full.subset(test_idx), "test"),
    )


def _renamed(data: Dataset, split_name: str) -> Dataset:
    return Dataset(
        inputs=data.inputs,
        labels=data.labels,
        task=data.task,
        name=f"{data.name}:{split_name}",
        meta=dict(data.meta, split=split_name),
        lengths=data.lengths,
    )


def load_data(name: str, seed: int = 0) -> Splits:
    """Train / calibration / test splits of the data set of reference model ``name``."""
    if name in ("digits-cnn", "edge-cnn"):
        size = 28 if name == "digits-cnn" else 32
        x, y = digits(size)
        source = f"sklearn.datasets.load_digits, 8x8 bilinear to {size}x{size}, scaled to [0, 1]"
        return _splits(
            Dataset({"input": x}, y, "classification", name, meta={"source": source}), seed
        )
    if name == "tabular-mlp":
        x, y = breast_cancer()
        train_idx, test_idx = split_index(len(x), seed)
        mean = x[train_idx].mean(axis=0)
        std = x[train_idx].std(axis=0)
        std[std == 0] = 1.0
        xs = ((x - mean) / std).astype(np.float32)
        meta = {
            "source": "sklearn.datasets.load_breast_cancer, standardized with train-split stats",
            "feature_mean": json.dumps(mean.tolist()),
            "feature_std": json.dumps(std.tolist()),
        }
        return _splits(Dataset({"input": xs}, y, "binary", name, meta=meta), seed)
    if name == "house-regressor":
        x, y = diabetes()
        meta = {
            "source": "sklearn.datasets.load_diabetes (scaled features, target in original units)"
        }
        return _splits(Dataset({"input": x}, y, "regression", name, meta=meta), seed)
    if name == "text-classifier":
        texts, labels = stdlib_docstrings()
        train_idx, _ = split_index(len(texts), seed)
        vocab = build_vocab([texts[i] for i in sorted(train_idx)])
        meta = {
            "source": "docstrings of Python's standard library, labelled by module family",
            "classes": json.dumps(list(TEXT_CLASSES)),
            "vocab_size": str(len(vocab) + 2),
        }
        ids = encode(texts, vocab)
        return _splits(
            Dataset(
                {"input_ids": ids},
                np.asarray(labels, dtype=np.int64),
                "classification",
                name,
                meta=meta,
            ),
            seed,
        )
    if name == "text-encoder":
        ids, y = text_corpus(seed)
        mask = (ids != PAD_ID).astype(np.int64)
        meta = {
            "source": "docstrings of Python's standard library, labelled by module family",
            "classes": json.dumps(list(TEXT_CLASSES)),
        }
        inputs = {"input_ids": ids, "attention_mask": mask}
        return _splits(Dataset(inputs, y, "embedding", name, meta=meta), seed)
    if name == "text-recognizer":
        return _digit_line_splits(name, seed)
    from edgekit.zoo import names

    raise BadInputError(f"unknown reference model {name!r}; choose one of: {', '.join(names())}")
