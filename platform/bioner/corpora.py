"""Dataset specs and the two-column IOB reader.

A dataset is declared by a YAML spec (``experiments/datasets/<name>.yaml``): where its
corpus folder is, which entity types it has, and one query text per type and source. Nothing
in code names a dataset or an entity type.
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import BionerError, ConfigError, CorpusError

SPLITS = ("train", "devel", "test")
TYPE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_REPO_ROOT = Path(__file__).resolve().parents[2]


class TypeQueries(BaseModel):
    """Query texts of one entity type, one per knowledge source (METHOD.md, Table 1)."""

    model_config = ConfigDict(extra="forbid")
    wikipedia: str = Field(min_length=1, description="the type's encyclopedia definition")
    annotation: str = Field(min_length=1, description="the corpus's annotation guideline")
    dictionary: str = Field(
        "Can you detect entities like {examples} ?",
        description="template; {examples} is filled with entity strings from the training split",
    )

    @field_validator("dictionary")
    @classmethod
    def _has_examples_slot(cls, v: str) -> str:
        if "{examples}" not in v:
            raise ValueError("the dictionary template must contain {examples}")
        return v


class DatasetSpec(BaseModel):
    """One dataset: its corpus folder and its entity types with their queries."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="short name, used in registry names")
    corpus: str = Field(description="folder with train.tsv, devel.tsv, test.tsv, relative to the spec file")
    entity_types: dict[str, TypeQueries] = Field(min_length=1, description="type name -> query texts")
    path: Path | None = Field(None, exclude=True, description="the spec file (set on load)")

    @field_validator("entity_types")
    @classmethod
    def _type_names(cls, v: dict) -> dict:
        # Type names become label and MLflow metric names (test_f1_<type>): keep them plain.
        for name in v:
            if not TYPE_NAME_RE.fullmatch(name):
                raise ValueError(f"entity type name {name!r}: use letters, digits, '_' and '-' (starting with a letter or digit)")
        return v

    @property
    def types(self) -> list[str]:
        return list(self.entity_types)

    @property
    def labels(self) -> list[str]:
        """BIO label set: O first, then B-/I- per type in spec order."""
        return ["O"] + [f"{p}-{t}" for t in self.entity_types for p in ("B", "I")]

    @property
    def corpus_dir(self) -> Path:
        base = self.path.parent if self.path else Path.cwd()
        return (base / self.corpus).resolve()

    def split_file(self, split: str) -> Path:
        return self.corpus_dir / f"{split}.tsv"


def spec_search_path() -> list[Path]:
    """Folders searched for `<name>.yaml`: $BIONER_DATASETS, ./experiments/datasets, the repo's."""
    dirs = [Path(p) for p in os.environ.get("BIONER_DATASETS", "").split(os.pathsep) if p]
    dirs += [Path.cwd() / "experiments" / "datasets", _REPO_ROOT / "experiments" / "datasets"]
    seen, out = set(), []
    for d in dirs:
        r = d.resolve()
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def find_spec(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise BionerError(f"{p}: dataset spec not found")
        return p.resolve()
    for d in spec_search_path():
        cand = d / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    known = sorted({f.stem for d in spec_search_path() if d.is_dir() for f in d.glob("*.yaml")})
    raise BionerError(f"dataset {str(name_or_path)!r} not found (known: {', '.join(known) or 'none'})")


def load_spec(name_or_path: str | os.PathLike) -> DatasetSpec:
    path = find_spec(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise BionerError(f"{path}: not a valid YAML file: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise BionerError(f"{path}: a dataset spec is a mapping with name, corpus, entity_types")
    try:
        spec = DatasetSpec(**raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: {format_validation_error(e)}") from None
    spec.path = path
    return spec


def list_specs() -> list[Path]:
    found: dict[str, Path] = {}
    for d in spec_search_path():
        if d.is_dir():
            for f in sorted(d.glob("*.yaml")):
                found.setdefault(f.stem, f)
    return [found[k] for k in sorted(found)]


def format_validation_error(e: ValidationError) -> str:
    """Pydantic errors as `key.path: message` on one line (the first three, then a count)."""
    parts = []
    for err in e.errors():
        key = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{key}: {msg}")
    more = f" (and {len(parts) - 3} more)" if len(parts) > 3 else ""
    return "; ".join(parts[:3]) + more


# --------------------------------------------------------------------------- reader


def _check_tag(tag: str, types: set[str], path: Path, lineno: int) -> None:
    if tag == "O":
        return
    if len(tag) > 2 and tag[:2] in ("B-", "I-"):
        if tag[2:] not in types:
            raise CorpusError(
                path, lineno, f"entity type {tag[2:]!r} is not declared in the spec (declared: {', '.join(sorted(types))})"
            )
        return
    raise CorpusError(path, lineno, f"tag {tag!r} is not O, B-TYPE or I-TYPE")


def iter_sentences(path: str | os.PathLike, types: Iterable[str]) -> Iterator[tuple[list[str], list[str]]]:
    """Stream (tokens, tags) sentences from a two-column IOB file, validating every line.

    Accepts CRLF, a UTF-8 BOM, blank-line runs and a missing final newline. Raises
    CorpusError(`FILE:LINE: reason`) on the first malformed line.
    """
    path = Path(path)
    if not path.exists():
        raise BionerError(f"{path}: file not found")
    if path.is_dir():
        raise BionerError(f"{path}: is a directory, expected a TSV file")
    types = set(types)
    tokens: list[str] = []
    tags: list[str] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorpusError(path, lineno, f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            line = line.rstrip("\r\n")
            if not line.strip():
                if tokens:
                    yield tokens, tags
                    tokens, tags = [], []
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise CorpusError(path, lineno, f"expected 2 tab-separated fields (token, tag), found {len(fields)}")
            token, tag = fields[0].strip(), fields[1].strip()
            if not token:
                raise CorpusError(path, lineno, "empty token")
            _check_tag(tag, types, path, lineno)
            tokens.append(token)
            tags.append(tag)
    if tokens:
        yield tokens, tags


@dataclass
class Split:
    """A split read into memory: parallel lists of token and tag sequences."""

    name: str
    path: Path
    tokens: list[list[str]]
    tags: list[list[str]]

    def __len__(self) -> int:
        return len(self.tokens)

    def to_dataset(self):
        import datasets

        return datasets.Dataset.from_dict({"tokens": self.tokens, "tags": self.tags})


def read_split(spec: DatasetSpec, split: str) -> Split:
    path = spec.split_file(split)
    toks, tags = [], []
    for s_tok, s_tag in iter_sentences(path, spec.types):
        toks.append(s_tok)
        tags.append(s_tag)
    if not toks:
        raise CorpusError(path, 1, "empty split: no sentences")
    return Split(split, path, toks, tags)


def read_iob(spec: DatasetSpec, split: str):
    """One split as a `datasets.Dataset` with columns `tokens` and `tags`."""
    return read_split(spec, split).to_dataset()


def merge(splits: list[Split]) -> Split:
    return Split(
        "+".join(s.name for s in splits),
        splits[0].path,
        [t for s in splits for t in s.tokens],
        [t for s in splits for t in s.tags],
    )


def subsample(split: Split, fraction: float, seed: int) -> Split:
    """Keep a seeded `fraction` of the sentences (at least one), in corpus order."""
    if fraction >= 1.0:
        return split
    n = max(1, round(len(split) * fraction))
    keep = sorted(random.Random(seed).sample(range(len(split)), n))
    return Split(split.name, split.path, [split.tokens[i] for i in keep], [split.tags[i] for i in keep])


def entity_strings(split: Split) -> dict[str, list[str]]:
    """Entity surface strings per type (strict IOB2 spans), in corpus order, duplicates kept."""
    from .evaluation import spans

    out: dict[str, list[str]] = {}
    for toks, tags in zip(split.tokens, split.tags):
        for typ, a, b in spans(tags):
            out.setdefault(typ, []).append(" ".join(toks[a:b]))
    return out


def split_stats(split: Split) -> dict:
    return _stats(zip(split.tokens, split.tags))


def scan_split(spec: DatasetSpec, split: str) -> dict:
    """Validate every line of a split and count it, streaming: memory does not grow with the file."""
    path = spec.split_file(split)
    st = _stats(iter_sentences(path, spec.types))
    if not st["sentences"]:
        raise CorpusError(path, 1, "empty split: no sentences")
    return st


def _stats(sentences: Iterable[tuple[list[str], list[str]]]) -> dict:
    from .evaluation import spans

    per_type: Counter = Counter()
    n = tokens = longest = 0
    for toks, tags in sentences:
        n += 1
        tokens += len(toks)
        longest = max(longest, len(toks))
        per_type.update(t for t, _, _ in spans(tags))
    return {"sentences": n, "tokens": tokens, "entities": sum(per_type.values()), "per_type": dict(per_type), "max_words": longest}
