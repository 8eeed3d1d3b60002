"""Text corpora for the language-model kinds, and the vocabulary file they share.

A corpus is `imdb` (the Keras IMDB movie reviews, downloaded on first use), a directory
of `.txt` files (searched recursively, one file = one document, read in place), or a
single text file (one document). Importing this module is light (no TensorFlow): the CLI
checks corpora and prompts at submit with it. Keras is imported only to load `imdb`.

Word-level tokens follow Keras' TextVectorization defaults, which the training job uses:
ASCII letters lowercased, ASCII punctuation removed, split on ASCII whitespace.
`words` mirrors that in plain Python for checks made without TensorFlow.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import detail
from kinds.contract import JobError, is_remote_folder
from kinds.paths import check_remote_folder, kind_of, listing, shown

IMDB = "imdb"
IMDB_SOURCES = (
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/imdb.npz and imdb_word_index.json"
)
IMDB_INDEX_FROM = 3  # keras.datasets.imdb: 0 padding, 1 start, 2 out-of-vocabulary
TEXT_SUFFIX = ".txt"
HEAD_BYTES = 64 * 1024  # what submit reads of each file to tell text from binary data
MAX_FILE_BYTES = 1024**3
LINE_BREAK_TAG = "<br />"  # HTML line breaks in IMDB reviews; replaced by a space
PROMPT_CHECK_BYTES = 64 * 1024**2
"""A local corpus up to this size is read at submit to check the prompt against it."""

PADDING, UNKNOWN = "", "[UNK]"  # token ids 0 and 1, as in TextVectorization
VOCABULARY_FORMAT = "atelier-text-vocabulary/1"
WORD, CHARACTER = "word", "char"

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ASCII_SPACE = re.compile(r"[ \t\n\v\f\r]+")
_BINARY = re.compile(rb"[\x00-\x08\x0e-\x1f]")  # control bytes no text file holds


# --- submit-time checks -----------------------------------------------------------------


def validate_corpus(value: str, context: object = None) -> str:
    """Check a corpus quickly at submit: `imdb` unchanged, else an absolute path.

    A directory must hold at least one `.txt` file, every `.txt` file must look like
    UTF-8 text, and at least one of them must hold a word. An object-store folder
    (`s3://...`, listed through the Submission in `context`) must hold a `.txt` file; the
    worker checks them once synced. Raises ValueError with a one-line message otherwise.
    """
    if value == IMDB:
        return value
    if is_remote_folder(value):
        keep = lambda name: name.lower().endswith(TEXT_SUFFIX)  # noqa: E731
        return check_remote_folder(value, context, keep, "corpus", f"{TEXT_SUFFIX} files", None)
    path, found = kind_of(value, "corpus")
    if found == "directory":
        files = text_files(path)
        if not files:
            raise ValueError(f"directory {path} holds no {TEXT_SUFFIX} files")
        if not any([check_text_file(file) for file in files]):  # check every file
            raise ValueError(f"corpus {path} is empty: its {len(files)} .txt files hold no text")
        return str(path)
    if found == "file":
        if not check_text_file(path):
            raise ValueError(f"corpus {path} is empty: the file holds no text")
        return str(path)
    raise ValueError(
        f"corpus {shown(value)} is neither {IMDB!r} nor an existing directory or text file"
    )


def text_files(directory: Path) -> list[Path]:
    """The `.txt` files under `directory`, recursively, in a stable (sorted) order."""
    return listing(directory, lambda path: path.suffix.lower() == TEXT_SUFFIX, "corpus")


def check_text_file(path: Path) -> bool:
    """Raise ValueError if `path` is not readable UTF-8 text (judged from its first
    64 KiB: no NUL or other control bytes, valid UTF-8); True if it holds any text."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError as exc:
        raise ValueError(f"{shown(str(path))}: cannot read the file ({exc.strerror})") from None
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {size} bytes, over the {MAX_FILE_BYTES}-byte limit per file")
    if _BINARY.search(head):
        raise ValueError(f"{path}: not a text file (binary data)")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if size > HEAD_BYTES and exc.start >= len(head) - 3:  # a character cut by the limit
            text = head[: exc.start].decode("utf-8")
        else:
            raise ValueError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    return bool(text.strip())


# --- tokens -----------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Word tokens as TextVectorization's default standardization and split make them."""
    standardized = text.translate(_ASCII_LOWER).translate(_PUNCTUATION)
    return [word for word in _ASCII_SPACE.split(standardized) if word]


def characters(text: str) -> list[str]:
    """Character tokens: the text lowercased, as the reference's character-level model."""
    return list(text.lower())


@dataclass(frozen=True)
class Vocabulary:
    """What a trained language model needs to turn text into token ids and back.

    `tokens[0]` is padding (never generated), `tokens[1]` stands for unknown tokens.
    `window` is the model's input length: a sampler feeds it at most that many tokens.
    """

    level: str  # WORD or CHARACTER
    architecture: str
    tokens: list[str]
    window: int
    prompt: str
    extra: dict[str, Any] = field(default_factory=dict)

    def tokenize(self, text: str) -> list[str]:
        return words(text) if self.level == WORD else characters(text)

    def encode(self, text: str) -> list[int]:
        index = self.index
        return [index.get(token, 1) for token in self.tokenize(text)]

    def known(self, text: str) -> list[str]:
        """The tokens of `text` that are in the vocabulary."""
        index = self.index
        return [token for token in self.tokenize(text) if index.get(token, 1) > 1]

    def decode(self, ids: Sequence[int]) -> str:
        separator = " " if self.level == WORD else ""
        return separator.join(self.tokens[i] for i in ids if i != 0)

    @property
    def index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    def to_json(self) -> str:
        data = {
            "format": VOCABULARY_FORMAT,
            "level": self.level,
            "architecture": self.architecture,
            "window": self.window,
            "prompt": self.prompt,
            **self.extra,
            "tokens": self.tokens,
        }
        return json.dumps(data, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        data = json.loads(text)
        if data.get("format") != VOCABULARY_FORMAT:
            raise ValueError(f"not an Atelier vocabulary file (format {data.get('format')!r})")
        known = {"format", "level", "architecture", "window", "prompt", "tokens"}
        tokens = [str(token) for token in data["tokens"]]
        if tokens[:2] != [PADDING, UNKNOWN] or data["level"] not in (WORD, CHARACTER):
            raise ValueError("vocabulary file is malformed")
        return cls(
            level=data["level"],
            architecture=str(data["architecture"]),
            tokens=tokens,
            window=int(data["window"]),
            prompt=str(data["prompt"]),
            extra={key: value for key, value in data.items() if key not in known},
        )

    @classmethod
    def read(cls, path: Path) -> Vocabulary:
        return cls.from_json(path.read_text(encoding="utf-8"))


# --- loading at run time ----------------------------------------------------------------


def load_documents(corpus: str) -> list[str]:
    """The documents of a corpus as text, `<br />` tags replaced by spaces.

    Raises JobError("dataset_unavailable") when `imdb` is neither cached nor
    downloadable, JobError("corpus_invalid") when files are missing, unreadable or not
    UTF-8, JobError("corpus_empty") when no document holds any text.
    """
    if corpus == IMDB:
        documents = _imdb_documents()
    else:
        path = Path(corpus)
        files = text_files(path) if path.is_dir() else [path] if path.is_file() else []
        if not files:
            raise JobError("corpus_invalid", f"corpus {corpus} holds no {TEXT_SUFFIX} files")
        documents = [_read_text(file) for file in files]
    documents = [text.replace(LINE_BREAK_TAG, " ") for text in documents]
    documents = [text for text in documents if text.strip()]
    if not documents:
        raise JobError("corpus_empty", f"corpus {corpus} holds no text")
    return documents


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise JobError("corpus_invalid", f"{path}: cannot read the file ({exc.strerror})") from None
    if _BINARY.search(data):
        raise JobError("corpus_invalid", f"{path}: not a text file (binary data)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JobError(
            "corpus_invalid", f"{path}: not UTF-8 text (bad byte at offset {exc.start})"
        ) from None


def _imdb_documents() -> list[str]:
    import keras

    try:
        (train, _), (test, _) = keras.datasets.imdb.load_data(index_from=IMDB_INDEX_FROM)
        index = keras.datasets.imdb.get_word_index()
    except Exception as exc:  # keras wraps every download failure in a bare Exception
        raise JobError(
            "dataset_unavailable",
            f"corpus 'imdb' is not in ~/.keras/datasets/ and could not be downloaded from "
            f"{IMDB_SOURCES} ({detail(exc, 200)})",
        ) from None
    words_by_id = {i + IMDB_INDEX_FROM: word for word, i in index.items()}
    return [
        " ".join(words_by_id[int(i)] for i in review[1:] if int(i) in words_by_id)
        for reviews in (train, test)
        for review in reviews
    ]


# --- the vocabulary as training will build it, read at submit ---------------------------


def submit_vocabulary(corpus: str, level: str, vocab_size: int) -> set[str] | None:
    """The tokens training would keep (the `vocab_size - 2` most frequent, ties by
    token, as TextVectorization and the LSTM's character table rank them), read from a
    local corpus of at most PROMPT_CHECK_BYTES; None for `imdb`, a larger corpus or one
    that cannot be read (the job then checks its prompt when it runs)."""
    if corpus == IMDB:
        return None
    path = Path(corpus)
    try:
        files = text_files(path) if path.is_dir() else [path]
        if sum(file.stat().st_size for file in files) > PROMPT_CHECK_BYTES:
            return None
        documents = [_read_text(file).replace(LINE_BREAK_TAG, " ") for file in files]
        documents = [document for document in documents if document.strip()]
    except (OSError, ValueError, JobError):
        return None
    if level == WORD:
        counts = Counter(token for document in documents for token in words(document))
    else:
        counts = Counter(characters("\n".join(documents)))
    ranked = sorted(counts, key=lambda token: (-counts[token], token))
    return set(ranked[: vocab_size - 2])
