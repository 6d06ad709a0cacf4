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
    from edgekit.zoo import names

    raise BadInputError(f"unknown reference model {name!r}; choose one of: {', '.join(names())}")
