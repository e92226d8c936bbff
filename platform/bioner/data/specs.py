"""Dataset specs: where a corpus is, its entity types and their query texts.

A dataset is declared by a YAML spec (``experiments/datasets/<name>.yaml``): where its
corpus folder is, which entity types it has, and one query text per type and source. Nothing
in code names a dataset or an entity type.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import SplitName, here
from ..errors import BionerError, ConfigError, format_validation_error

TYPE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# A type name becomes labels (B-<type>) and MLflow metric names (`test_f1_<type>`, at most 250
# characters in MLflow): 64 leaves room for every prefix the platform writes.
MAX_TYPE_NAME = 64
# The checkout this package runs from (an editable install): its experiments/ are found too.
REPO_ROOT = Path(__file__).resolve().parents[3]


def _started_in() -> Path | None:
    try:
        return here()
    except OSError:  # a process whose folder is gone: nothing to remember
        return None


# The folder the command started in, searched too: a Ray job's driver leaves it once Ray starts
# (train.local_ray.leave_job_folder), and a spec it named from there must still be found after.
STARTED_IN = _started_in()


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
        return check_template(v)


def check_template(v: str) -> str:
    """A dictionary template fills exactly one field, `{examples}`; a literal brace is written `{{` or `}}`."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(v) if name is not None]
    except ValueError as e:  # a lone '{' or '}'
        raise ValueError(
            f"the dictionary template is not a valid template ({e}; write a literal brace as '{{{{' or '}}}}')"
        ) from None
    others = sorted({name or "{}" for name, _, _ in fields if name != "examples"})
    if others:
        raise ValueError(
            f"the dictionary template may only use {{examples}}, not "
            f"{', '.join('{' + o.strip('{}') + '}' for o in others)}"
        )
    if not fields:
        raise ValueError("the dictionary template must contain {examples}")
    try:
        v.format(examples="x")
    except (
        ValueError,
        KeyError,
        IndexError,
        AttributeError,
        TypeError,
    ) as e:  # e.g. a format spec naming another field
        raise ValueError(f"the dictionary template cannot be filled ({type(e).__name__}: {e})") from None
    return v


def check_type_case(types) -> None:
    """Refuse two type names that differ only in case: they would be two types, each with part of the mentions."""
    seen: dict[str, str] = {}
    for t in types:
        first = seen.setdefault(t.casefold(), t)
        if first != t:
            raise ValueError(
                f"entity types {first!r} and {t!r} differ only in case: they would be two types; "
                "spell the type the same everywhere"
            )


class _Labelled:
    """Entity types and the BIO label set of a spec with `entity_types`."""

    @property
    def types(self) -> list[str]:
        return list(self.entity_types)

    @property
    def labels(self) -> list[str]:
        """BIO label set: O first, then B-/I- per type in spec order."""
        return ["O"] + [f"{p}-{t}" for t in self.types for p in ("B", "I")]


CorpusFormat = Literal["iob", "pubtator", "bioc", "bioc-json", "brat"]


class DatasetSpec(_Labelled, BaseModel):
    """One dataset: its corpus (IOB sentences or documents) and its entity types with their queries."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="short name, used in registry names")
    corpus: str | None = Field(
        None,
        description="folder with train.tsv, devel.tsv, test.tsv, relative to the spec file "
        "(IOB corpora; or give `files`)",
    )
    format: CorpusFormat = Field(
        "iob",
        description="iob: two-column TSV sentences; pubtator, bioc (XML), bioc-json, brat "
        "(a folder of .txt/.ann pairs): documents, split into sentences to train",
    )
    files: dict[SplitName, str] | None = Field(
        None, description="split -> file (or brat folder), relative to the spec file; a split may be missing"
    )
    type_map: dict[str, str | None] = Field(
        default_factory=dict,
        description="corpus class -> spec type, or null to ignore "
        "the class; a class neither mapped nor a spec type is an error",
    )
    entity_types: dict[str, TypeQueries] = Field(min_length=1, description="type name -> query texts")
    path: Path | None = Field(None, exclude=True, description="the spec file (set on load)")

    @model_validator(mode="after")
    def _where(self) -> DatasetSpec:
        if (self.corpus is None) == (self.files is None):
            raise ValueError("give either corpus (a folder of train/devel/test.tsv) or files (split -> file)")
        if self.format != "iob" and self.files is None:
            raise ValueError(
                f"format {self.format}: give files (split -> file), e.g. files: {{train: train.{self.format}}}"
            )
        if self.files is not None and not self.files:
            raise ValueError("files: name at least one split")
        if self.type_map and self.format == "iob":
            raise ValueError("type_map: applies to document formats (an IOB corpus's tags name the spec's types)")
        for cls, target in self.type_map.items():
            if target is not None and target not in self.entity_types:
                raise ValueError(
                    f"type_map.{cls}: {target!r} is not one of entity_types ({', '.join(self.entity_types)})"
                )
        return self

    @property
    def documents(self) -> bool:
        """Whether the corpus is documents (split into sentences here) rather than IOB sentences."""
        return self.format != "iob"

    @field_validator("entity_types")
    @classmethod
    def _type_names(cls, v: dict) -> dict:
        # Type names become label and MLflow metric names (test_f1_<type>): keep them plain.
        check_type_case(v)
        for name in v:
            if not TYPE_NAME_RE.fullmatch(name):
                raise ValueError(
                    f"entity type name {name!r}: use letters, digits, '_' and '-' (starting with a letter or digit)"
                )
            if len(name) > MAX_TYPE_NAME:
                raise ValueError(
                    f"entity type name {name[:20]!r}... is {len(name)} characters: at most {MAX_TYPE_NAME} "
                    "(it becomes MLflow metric names, which MLflow limits to 250 characters)"
                )
        return v

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else here()

    @property
    def corpus_dir(self) -> Path:
        return (self.base_dir / (self.corpus or ".")).resolve()

    def has_split(self, split: str) -> bool:
        return self.files is None or split in self.files

    def split_file(self, split: str) -> Path:
        if self.files is None:
            return self.corpus_dir / f"{split}.tsv"
        if split not in self.files:
            where = f"{self.path}: " if self.path else ""
            raise BionerError(f"{where}files.{split}: not given (this spec has {', '.join(self.files)})")
        return (self.base_dir / self.files[split]).resolve()

    @property
    def members(self) -> list[DatasetSpec]:
        """The corpora this dataset is made of: itself (a composite spec has several)."""
        return [self]


class CompositeSpec(_Labelled, BaseModel):
    """Several datasets as one: the union of their entity types, each corpus annotating its own.

    A sentence is only ever asked and scored about the types its corpus annotates: a corpus that
    marks diseases says nothing about the chemicals in its sentences. Two members that declare the
    same type share it (its queries are the first member's).
    """

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$", description="short name, used in registry names")
    corpora: list[str] = Field(min_length=1, description="member specs: names, or paths relative to this spec")
    path: Path | None = Field(None, exclude=True, description="the spec file (set on load)")
    members: list[DatasetSpec] = Field(default_factory=list, exclude=True, description="the member specs (set on load)")

    @property
    def entity_types(self) -> dict[str, TypeQueries]:
        out: dict[str, TypeQueries] = {}
        for m in self.members:
            for t, q in m.entity_types.items():
                out.setdefault(t, q)
        return out


Spec = DatasetSpec | CompositeSpec


def spec_search_path() -> list[Path]:
    """Folders searched for `<name>.yaml`: $BIONER_DATASETS, ./experiments/datasets (of the current folder, then
    of the one the command started in), the repo's."""
    dirs = [Path(p) for p in os.environ.get("BIONER_DATASETS", "").split(os.pathsep) if p]
    dirs += [here() / "experiments" / "datasets"] + ([STARTED_IN / "experiments" / "datasets"] if STARTED_IN else [])
    dirs += [REPO_ROOT / "experiments" / "datasets"]
    seen, out = set(), []
    for d in dirs:
        r = d.resolve()
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def find_spec(name_or_path: str | os.PathLike) -> Path:
    given = Path(name_or_path)
    p = given if given.is_absolute() else here() / given
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise BionerError(f"{given}: dataset spec not found")
        return p.resolve()
    for d in spec_search_path():
        cand = d / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    known = sorted({f.stem for d in spec_search_path() if d.is_dir() for f in d.glob("*.yaml")})
    raise BionerError(f"dataset {str(name_or_path)!r} not found (known: {', '.join(known) or 'none'})")


class _NoDuplicateKeys(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: plain YAML
    keeps the last one silently (a type declared twice would lose its first queries)."""


class DuplicateKey(yaml.YAMLError):
    def __init__(self, key, first: int, second: int):
        self.key, self.first, self.second = key, first, second
        super().__init__(
            f"{key!r} is given twice in one mapping (lines {first} and {second}); the second would silently replace "
            "the first"
        )


def _construct_mapping(loader, node, deep=False):
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node.start_mark.line + 1)
        except TypeError:  # an unhashable key: the safe loader's own error follows
            continue
        if first != key_node.start_mark.line + 1:
            raise DuplicateKey(key, first, key_node.start_mark.line + 1)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_NoDuplicateKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_spec(name_or_path: str | os.PathLike, _within: tuple[Path, ...] = ()) -> Spec:
    """A dataset spec by name or path: one corpus (`corpus:`), or a composite of specs (`corpora:`)."""
    path = find_spec(name_or_path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_NoDuplicateKeys)
    except DuplicateKey as e:
        raise BionerError(f"{path}:{e.second}: {e}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise BionerError(f"{path}: not a valid YAML file: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise BionerError(f"{path}: a dataset spec is a mapping with name, corpus, entity_types (or name, corpora)")
    try:
        spec = CompositeSpec(**raw) if "corpora" in raw else DatasetSpec(**raw)
    except ValidationError as e:
        raise ConfigError(f"{path}: {format_validation_error(e)}") from None
    spec.path = path
    if isinstance(spec, CompositeSpec):
        spec.members = _members(spec, path, _within + (path,))
        _check_member_types(spec, path)
    return spec


def _members(spec: CompositeSpec, path: Path, within: tuple[Path, ...]) -> list[DatasetSpec]:
    """Each member as a single-corpus spec (a nested composite contributes its members), once each."""
    out: dict[Path, DatasetSpec] = {}
    for ref in spec.corpora:
        local = path.parent / ref
        target = local if ref.endswith((".yaml", ".yml")) and local.is_file() else ref
        found = find_spec(target)
        if found == path:
            raise ConfigError(f"{path}: corpora: {ref!r} includes the spec itself")
        if found in within:
            chain = " -> ".join(p.name for p in within[within.index(found) :] + (found,))
            raise ConfigError(f"{path}: corpora: {ref!r} closes a cycle of composite specs: {chain}")
        for m in load_spec(target, within).members:
            twin = next((o for o in out.values() if o.name == m.name and o.path != m.path), None)
            if twin is not None:  # per-corpus scores and sweep tags are keyed by member name
                raise ConfigError(
                    f"{path}: corpora: two members are named {m.name!r} ({twin.path} and {m.path}); "
                    "their per-corpus scores would merge: rename one"
                )
            out.setdefault(m.path, m)
    return list(out.values())


def _check_member_types(spec: CompositeSpec, path: Path) -> None:
    """Members that name one type in two spellings (Disease, disease) would train two types."""
    seen: dict[str, tuple[str, str]] = {}  # casefolded type -> (its first spelling, the member that has it)
    for m in spec.members:
        for t in m.types:
            first, where = seen.setdefault(t.casefold(), (t, m.name))
            if first != t:
                raise ConfigError(
                    f"{path}: corpora: type {first!r} of {where} and {t!r} of {m.name} differ only in "
                    "case: they would be two types; spell the type the same in every member"
                )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_hashes(spec: Spec, splits=("train", "devel", "test")) -> dict[str, str]:
    """SHA-256 of the spec file and of each split file: what a model was trained and scored on.
    Recorded on a registered model version, so that promotion scores exactly that corpus. A
    composite adds its members' files, keyed `<member>:<file>`."""
    out = {"spec": _sha256(spec.path)} if spec.path else {}
    if isinstance(spec, CompositeSpec):
        for m in spec.members:
            out.update({f"{m.name}:{k}": v for k, v in content_hashes(m, splits).items()})
        return out
    for split in splits:
        f = spec.split_file(split)
        if f.is_dir():  # a brat folder: its files in name order
            h = hashlib.sha256()
            for part in sorted(x for x in f.iterdir() if x.is_file()):
                h.update(part.name.encode() + b"\0" + _sha256(part).encode())
            out[split] = h.hexdigest()
            continue
        if not f.is_file():
            raise BionerError(f"{f}: file not found")
        out[split] = _sha256(f)
    return out


def list_specs() -> list[Path]:
    found: dict[str, Path] = {}
    for d in spec_search_path():
        if d.is_dir():
            for f in sorted(d.glob("*.yaml")):
                found.setdefault(f.stem, f)
    return [found[k] for k in sorted(found)]
