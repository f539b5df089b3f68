"""YAML loading, `--set key.path=value` overrides, and error messages that name the file and dotted key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import CvlabError
from .augment import AUGMENT_OPS
from .data import CHARSET_FORMS, DATASET_TYPES, CharsetChars, CharsetFile
from .schema import Experiment

# Discriminated unions put the chosen tag into error locations (`data.train[0].synth.size`,
# `augment[3].text_distort.segments`); drop it.
_UNION_TAGS = set(DATASET_TYPES) | set(AUGMENT_OPS)
_TAG_KEYS = ("type", "op")  # the discriminator field of each tagged union


def _dotted(loc: tuple) -> str:
    out = ""
    prev = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif (prev is None or isinstance(prev, int)) and part in _UNION_TAGS:
            pass
        else:
            out += ("." if out else "") + str(part)
        prev = part
    return out or "(top level)"


def _members(ann: Any) -> list[type[BaseModel]]:
    """The config classes an annotation can hold (through Optional, list[...], Annotated unions)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for a in get_args(ann) for m in _members(a)]


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The config class that owns the last key of `loc`, to list the valid keys in an 'unknown key' error."""
    candidates: list[type[BaseModel]] = [Experiment]
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        tagged = [c for c in candidates
                  if any(k in c.model_fields and c.model_fields[k].default == part for k in _TAG_KEYS)]
        if tagged:
            candidates = tagged
            continue
        fields = [c.model_fields[part] for c in candidates if part in c.model_fields]
        candidates = [m for f in fields for m in _members(f.annotation)]
    return candidates[0] if len(candidates) == 1 else None


def _tag_key(e: dict) -> str:
    """`type` for datasets, `op` for augment ops: pydantic quotes the discriminator name in the context."""
    return str(e.get("ctx", {}).get("discriminator", "type")).strip("'\"")


def _without_charset_form(loc: tuple) -> tuple[tuple, str | None]:
    """`loc` without the charset union's tag (`data.charset.chars.chars` -> `data.charset.chars`), and the tag."""
    for i in range(1, len(loc)):
        if loc[i - 1] == "charset" and loc[i] in CHARSET_FORMS:
            return loc[:i] + loc[i + 1:], loc[i]
    return loc, None


def format_error(err: ValidationError, source: str) -> str:
    """One line per problem: `source: dotted.key: what is wrong`."""
    lines = []
    for e in err.errors():
        loc, form = _without_charset_form(tuple(e["loc"]))
        key = _dotted(loc)
        if e["type"] == "extra_forbidden":
            owner = {"chars": CharsetChars, "file": CharsetFile}.get(form) or _model_at(loc)
            valid = f" (valid keys: {', '.join(owner.model_fields)})" if owner else ""
            msg = f"unknown key{valid}"
        elif e["type"] == "union_tag_invalid":
            msg = f"unknown {_tag_key(e)} {e['ctx']['tag']}; valid: {e['ctx']['expected_tags']}"
        elif e["type"] == "union_tag_not_found":
            tag = _tag_key(e)
            valid = AUGMENT_OPS if tag == "op" else DATASET_TYPES
            msg = f"missing `{tag}` (valid: {', '.join(valid)})"
        else:
            msg = e["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """`train.lr=3e-4` -> (['train', 'lr'], 0.0003); values are YAML, so lists and mappings work too."""
    if "=" not in text:
        raise CvlabError(f"--set {text}: expected key.path=value")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise CvlabError(f"--set {text}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise CvlabError(f"--set {text}: value is not valid YAML ({e.__class__.__name__})") from None
    path: list[str | int] = [int(p) if p.isdigit() else p for p in key.split(".")]
    return path, value


def apply_override(raw: dict, text: str) -> None:
    path, value = parse_override(text)
    node: Any = raw
    for i, part in enumerate(path[:-1]):
        where = ".".join(map(str, path[: i + 1]))
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise CvlabError(f"--set {text}: {where}: no list item {part}")
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise CvlabError(f"--set {text}: {where}: not a mapping")
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            node = nxt
    last = path[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise CvlabError(f"--set {text}: no list item {last}")
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise CvlabError(f"--set {text}: {'.'.join(map(str, path[:-1]))}: not a mapping")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML silently keeps the last)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden by keys given here
            continue
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {seen[key]})", key_node.start_mark)
        if isinstance(key, (str, int, float, bool)):
            seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _decode(p: Path, data: bytes) -> str:
    """UTF-8 (a BOM allowed); anything else is an error naming the encoding found where it is recognisable."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise CvlabError(f"{p}: the file is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CvlabError(f"{p}:{line}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}; Latin-1 or "
                         f"Windows-1252?); save the file as UTF-8") from None


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise CvlabError(f"{p}: experiment file not found" if not p.exists() else f"{p}: not a file")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise CvlabError(f"{p}: cannot read ({e.strerror})") from None
    try:
        raw = yaml.load(_decode(p, data), Loader=_UniqueKeyLoader)  # noqa: S506  (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise CvlabError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if raw is None:
        raise CvlabError(f"{p}: the file is empty; an experiment needs at least its sections (name, data, model, "
                         f"train, ...; see experiments/quickstart.yaml)")
    if not isinstance(raw, dict):
        raise CvlabError(f"{p}: the top level must be a mapping of sections (name, seed, data, model, train, ...)")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), raw: dict | None = None
                ) -> Experiment:
    """Read, override, validate. Raises CvlabError with one line per problem."""
    source = str(path) if path is not None else "config"
    data = read_yaml(path) if raw is None else raw
    try:
        Experiment.model_validate(data)
    except ValidationError as e:
        raise CvlabError(format_error(e, source)) from None
    if overrides:
        # Apply overrides to the resolved config (defaults filled) so any default can be overridden.
        data = Experiment.model_validate(data).model_dump(mode="json")
        for text in overrides:
            apply_override(data, text)
        try:
            return Experiment.model_validate(data)
        except ValidationError as e:
            raise CvlabError(format_error(e, f"{source} with --set {' --set '.join(overrides)}")) from None
    return Experiment.model_validate(data)


def load_saved_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                      raw: dict | None = None) -> Experiment:
    """A run's own config (its config.yaml, or the one a copied-out checkpoint carries). It was written with every
    key as the run had it, so a key it lacks was added to cvlab after the run started: it takes the value that
    rebuilds the model the run trained, not today's default."""
    data = fill_added_keys(read_yaml(path) if raw is None else raw)
    return load_config(path, overrides, raw=data)


def fill_added_keys(raw: dict) -> dict:
    """A copy of a run's saved config with every key added to cvlab since the run started set to the value the
    run trained with (load_saved_config; resume compares a checkpoint's config through it as well)."""
    data = copy.deepcopy(raw)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        return data
    norm = model.get("norm")
    if isinstance(norm, dict) and norm.get("name") == "group" and "min_channels_per_group" not in norm:
        norm["min_channels_per_group"] = 1  # before the key, `groups` went down to one channel per group
    model.setdefault("init", "torch")  # before the key, every weight kept PyTorch's default init
    return data


def dump_config(cfg: Experiment) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _split_choices(kind: str) -> tuple[str, ...] | None:
    """The split names a dataset type accepts: a fixed tuple, None when any name is allowed (an LMDB
    sub-folder, an IAM split list), () when the type has no split (folder, synth) or is unknown."""
    from .data import DATASET_SPECS

    for spec in DATASET_SPECS:
        if spec.model_fields["type"].default == kind:
            field = spec.model_fields.get("split")
            if field is None:
                return ()
            ann = field.annotation
            return get_args(ann) if get_origin(ann) is Literal else None  # Literal: fixed names; str: any
    return ()


def _root_and_split(text: str, kind: str, rest: str) -> tuple[str, str | None]:
    """ROOT[:SPLIT] where ROOT may itself hold a `:`. The last `:` part is the split when it is a split name of
    the type, or when the path before it exists and the whole does not; it is part of the root when the type has
    no split, when the whole path exists, or when it names no split of a type with fixed split names. Anything
    else (a free-form split, as LMDB sub-folders and IAM lists are, with both paths or neither on disk) is
    ambiguous: an error saying how to write it."""
    head, sep, tail = rest.rpartition(":")
    choices = _split_choices(kind)
    if not sep or choices == ():
        return rest, None
    if choices and tail in choices:
        return head, tail
    whole, front = (Path(p).expanduser().exists() for p in (rest, head))
    if whole and not front:
        return rest, None
    if front and not whole:
        return head, tail  # a misspelt split name of a fixed list is then reported as such
    if choices and not whole:
        return rest, None  # not a split name: part of a root that the loader reports missing
    both = f"both {rest} and {head} exist" if whole else f"neither {rest} nor {head} exists"
    raise CvlabError(f"--data {text}: cannot tell whether {tail!r} is a split of {kind} or part of the root "
                     f"({both}); write it as --data {kind} --opt root=PATH --opt split=NAME")


def parse_data_spec(text: str, opts: list[str] | tuple[str, ...] = ()):
    """`TYPE[:ROOT[:SPLIT]]` plus `--opt key=value` items -> a validated dataset spec. A root may hold `:`
    (see `_root_and_split`); `--opt root=PATH --opt split=NAME` says it without any parsing."""
    kind, _, rest = text.partition(":")
    raw: dict[str, Any] = {"type": kind}
    if rest:
        root, split = _root_and_split(text, kind, rest)
        raw["root"] = root
        if split:
            raw["split"] = split
    return build_data_spec(raw, opts, f"--data {text}")


def build_data_spec(fields: dict[str, Any], opts: list[str] | tuple[str, ...] = (), source: str = "--data"):
    """A validated dataset spec from its fields (type, root, split, ...) plus `--opt key=value` items; a
    validation error names `source` (the options the fields came from)."""
    from pydantic import TypeAdapter

    from .data import DatasetSpec

    raw = dict(fields)
    for o in opts:
        path, value = parse_override(o)
        if len(path) != 1:
            raise CvlabError(f"--opt {o}: expected key=value")
        raw[str(path[0])] = value
    try:
        return TypeAdapter(DatasetSpec).validate_python(raw)
    except ValidationError as e:
        raise CvlabError(format_error(e, source)) from None
