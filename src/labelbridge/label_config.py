"""Safe parsing of Label Studio labeling configs into typed objects, and helpers for models.

A labeling config is XML written by whoever can edit a project, and it reaches us on every
/setup and /predict. So it is parsed with defusedxml (no DTD, no entities, no external
references), under a byte size limit and a nesting depth limit, and every failure becomes an
`InvalidLabelConfig` that says what is wrong: never a raw XML exception.

Parsing follows Label Studio's own rules (a control tag has `name` and `toName`, an object tag
has `name` and `value`; `<Choice>`, `<Label>` belong to the nearest enclosing control) so that
`to_parsed_dict()` gives the `parsed_label_config` Label Studio computes itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Any, NamedTuple
from xml.etree import ElementTree

import defusedxml.ElementTree as safe_xml
from defusedxml import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)

from labelbridge.errors import InvalidLabelConfig

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "ControlMatch",
    "ControlTag",
    "LabelConfig",
    "MissingTag",
    "ObjectTag",
]

DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_MAX_DEPTH = 100

_FIELD = "label_config"
_LABEL_TAGS = frozenset({"Label", "Choice"})
_NOT_CONTROL_TAGS = frozenset({"Filter"})


def _no_entries() -> Mapping[Any, Any]:
    return MappingProxyType({})


class MissingTag(InvalidLabelConfig, ValueError):
    """The config has no tag of the kind a model asked for.

    Also a ValueError, as the SDK's `get_first_tag_occurence` raised, so ported code keeps working.
    """


@dataclass(frozen=True, slots=True)
class ObjectTag:
    """A tag that shows task data (`<Text>`, `<Image>` ...): what predictions point at."""

    name: str
    tag: str
    value: str
    value_field: str | None
    attrs: Mapping[str, str] = field(default_factory=_no_entries, repr=False)

    @property
    def value_type(self) -> str | None:
        return self.attrs.get("valueType") or self.attrs.get("valuetype")


@dataclass(frozen=True, slots=True)
class ControlTag:
    """A tag that produces results (`<Choices>`, `<RectangleLabels>` ...).

    `type` is the result type Label Studio expects in a prediction (the tag, lowercased).
    `labels` holds the `value` of each child `<Choice>`/`<Label>` in document order; the
    precomputed `label_set` (values and aliases) keeps validation of large batches cheap.
    """

    name: str
    tag: str
    type: str
    to_name: tuple[str, ...]
    labels: tuple[str, ...] = ()
    label_attrs: Mapping[str, Mapping[str, str]] = field(default_factory=_no_entries, repr=False)
    dynamic_labels: bool = False
    choice: str | None = None
    attrs: Mapping[str, str] = field(default_factory=_no_entries, repr=False)
    label_paths: tuple[tuple[str, ...], ...] = field(default=(), repr=False)
    label_set: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    path_set: frozenset[tuple[str, ...]] = field(default=frozenset(), repr=False, compare=False)
    leaf_paths: frozenset[tuple[str, ...]] = field(default=frozenset(), repr=False, compare=False)

    @property
    def multiple(self) -> bool:
        return self.choice == "multiple"


class ControlMatch(NamedTuple):
    """What `LabelConfig.first()` found: the control, the object it labels, and its data key."""

    control: ControlTag
    object: ObjectTag
    value_field: str | None
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LabelConfig:
    """A parsed labeling config. Immutable: parsed results are cached and shared by threads."""

    raw: str = field(repr=False)
    hash: str
    controls: Mapping[str, ControlTag]
    objects: Mapping[str, ObjectTag]
    relation_labels: frozenset[str] = frozenset()
    index_flags: tuple[str, ...] = field(default=(), repr=False)
    labels_by_object: Mapping[str, frozenset[str] | None] = field(
        default_factory=_no_entries, repr=False, compare=False
    )
    tools_by_object: Mapping[str, frozenset[str]] = field(
        default_factory=_no_entries, repr=False, compare=False
    )

    @classmethod
    def parse(
        cls, xml: str, *, max_bytes: int = DEFAULT_MAX_BYTES, max_depth: int = DEFAULT_MAX_DEPTH
    ) -> LabelConfig:
        """Parse `xml` safely; the same text is parsed once (an LRU cache keyed by the text)."""
        if not isinstance(xml, str):
            raise InvalidLabelConfig(
                f"the labeling config must be a string, not {type(xml).__name__}",
                field=_FIELD,
                fix="send the project's XML labeling config as text",
            )
        size = len(xml.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise InvalidLabelConfig(
                f"the labeling config is {size} bytes, larger than the {max_bytes} bytes allowed",
                field=_FIELD,
                fix="shorten the config, or raise MAX_LABEL_CONFIG_BYTES",
            )
        return _parse_cached(xml, max_depth)

    # --- lookups for model authors ----------------------------------------------------
    def controls_of(self, tag: str | Iterable[str]) -> list[ControlTag]:
        """The controls of these tag names (case-insensitive), in document order."""
        wanted = _tag_set(tag)
        return [c for c in self.controls.values() if c.tag.lower() in wanted]

    def first(
        self, tag: str | Iterable[str], *, object_tag: str | Iterable[str] | None = None
    ) -> ControlMatch:
        """The first control of `tag` connected to an object (of `object_tag`, if given).

        Raises MissingTag (an InvalidLabelConfig) that names what is missing, so a model
        used with the wrong project fails with a message the user can act on.
        """
        found = self._find(tag, object_tag)
        if found is None:
            raise self._missing(tag, object_tag)
        control, obj = found
        return ControlMatch(control, obj, obj.value_field, control.labels)

    def get_first_tag_occurence(
        self,
        control_type: str | tuple[str, ...],
        object_type: str | tuple[str, ...],
        name_filter: Callable[[str], bool] | None = None,
        to_name_filter: Callable[[str], bool] | None = None,
    ) -> tuple[str, str, str]:
        """`(from_name, to_name, value)` as the public SDK's method of that name returns.

        Unlike the SDK, `to_name` is the matching object's name (the SDK returns the control's
        first toName even when a later one matched); both agree for single-object controls.
        """
        found = self._find(control_type, object_type, name_filter, to_name_filter)
        if found is None:
            raise self._missing(control_type, object_type)
        control, obj = found
        value = obj.value_field if obj.value_field is not None else obj.value.lstrip("$")
        return control.name, obj.name, value

    def to_parsed_dict(self) -> dict[str, dict[str, Any]]:
        """The `parsed_label_config` Label Studio computes, as the SDK's model base exposes."""
        out: dict[str, dict[str, Any]] = {}
        for control in self.controls.values():
            info: dict[str, Any] = {"type": control.tag, "to_name": list(control.to_name)}
            regex = {
                flag: ".*" for flag in self.index_flags if any(flag in n for n in control.to_name)
            }
            if regex:
                info["regex"] = regex
            conditionals = _conditionals(control.attrs)
            if conditionals:
                info["conditionals"] = conditionals
            if _is_ls_variable(control.attrs.get("value", "")) or control.attrs.get("apiUrl"):
                info["dynamic_labels"] = True
            info["inputs"] = [
                {
                    "type": obj.tag,
                    "valueType": obj.attrs.get("valueType"),
                    "value": obj.value.lstrip("$"),
                }
                for obj in (self.objects.get(n) for n in control.to_name)
                if obj is not None
            ]
            attrs: dict[str, dict[str, str]] = {}
            for attr in control.label_attrs.values():
                key = attr.get("alias") or attr.get("value") or ""
                attrs.setdefault(key, dict(attr))
            info["labels"] = list(attrs)
            info["labels_attrs"] = attrs
            out[control.name] = info
        return out

    # --- internals --------------------------------------------------------------------
    def _find(
        self,
        tag: str | Iterable[str],
        object_tag: str | Iterable[str] | None,
        name_filter: Callable[[str], bool] | None = None,
        to_name_filter: Callable[[str], bool] | None = None,
    ) -> tuple[ControlTag, ObjectTag] | None:
        wanted = _tag_set(tag)
        wanted_objects = None if object_tag is None else _tag_set(object_tag)
        for control in self.controls.values():
            if control.tag.lower() not in wanted:
                continue
            if name_filter is not None and not name_filter(control.name):
                continue
            for name in control.to_name:
                obj = self.objects.get(name)
                if obj is None:
                    continue
                if wanted_objects is not None and obj.tag.lower() not in wanted_objects:
                    continue
                if to_name_filter is not None and not to_name_filter(name):
                    continue
                return control, obj
        return None

    def _missing(
        self, tag: str | Iterable[str], object_tag: str | Iterable[str] | None
    ) -> MissingTag:
        what = f"{_describe(tag)} tag"
        if object_tag is not None:
            what += f" connected to an object tag of type {_describe(object_tag)}"
        has = ", ".join(
            f"{c.tag} {c.name!r} -> "
            + "/".join(
                f"{self.objects[n].tag} {n!r}" if n in self.objects else f"missing {n!r}"
                for n in c.to_name
            )
            for c in self.controls.values()
        )
        return MissingTag(
            f"the labeling config has no {what} (it has: {has})",
            field=_FIELD,
            fix=f"use this model with a project whose labeling config has a {what}",
        )

    def __repr__(self) -> str:
        controls = [f"{c.tag} {c.name!r} -> {','.join(c.to_name)}" for c in self.controls.values()]
        objects = [f"{o.tag} {o.name!r} ({o.value})" for o in self.objects.values()]
        return f"LabelConfig(hash={self.hash[:12]!r}, controls={controls}, objects={objects})"


# --- parsing ------------------------------------------------------------------------------
class _TooDeep(Exception):
    pass


class _DepthLimitedBuilder:
    """A TreeBuilder that stops the parse as soon as elements nest deeper than the limit."""

    def __init__(self, max_depth: int) -> None:
        self._builder = ElementTree.TreeBuilder()
        self._depth = 0
        self._max_depth = max_depth

    def start(self, tag: str, attrs: dict[str, str]) -> ElementTree.Element:
        self._depth += 1
        if self._depth > self._max_depth:
            raise _TooDeep
        return self._builder.start(tag, attrs)

    def end(self, tag: str) -> ElementTree.Element:
        self._depth -= 1
        return self._builder.end(tag)

    def data(self, data: str) -> None:
        self._builder.data(data)

    def close(self) -> ElementTree.Element:
        return self._builder.close()


def _invalid(detail: str, fix: str) -> InvalidLabelConfig:
    return InvalidLabelConfig(detail, field=_FIELD, fix=fix)


def _read_xml(xml: str, max_depth: int) -> ElementTree.Element:
    if not xml.strip():
        raise _invalid("the labeling config is empty", "send the project's XML labeling config")
    parser = safe_xml.DefusedXMLParser(
        target=_DepthLimitedBuilder(max_depth),
        forbid_dtd=True,
        forbid_entities=True,
        forbid_external=True,
    )
    try:
        parser.feed(xml)
        root = parser.close()
    except _TooDeep:
        raise _invalid(
            f"the labeling config nests tags more than {max_depth} levels deep",
            "flatten the nested <View> tags",
        ) from None
    except DTDForbidden:
        raise _invalid(
            "the labeling config has a DTD (<!DOCTYPE ...>), which is refused for safety",
            "remove the <!DOCTYPE ...> declaration",
        ) from None
    except EntitiesForbidden:
        raise _invalid(
            "the labeling config declares XML entities, which are refused for safety",
            "remove the <!ENTITY ...> declarations",
        ) from None
    except ExternalReferenceForbidden:
        raise _invalid(
            "the labeling config refers to an external resource, which is refused for safety",
            "remove the external reference",
        ) from None
    except DefusedXmlException as exc:
        raise _invalid(
            f"the labeling config uses a refused XML feature ({type(exc).__name__})",
            "use plain XML tags and attributes only",
        ) from None
    except ElementTree.ParseError as exc:
        raise _invalid(
            f"the labeling config is not well-formed XML: {exc}",
            "check the config in Label Studio's labeling interface editor",
        ) from None
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:
        raise _invalid(
            f"the labeling config could not be read as XML: {exc}",
            "check the config in Label Studio's labeling interface editor",
        ) from None
    if not isinstance(root, ElementTree.Element) or not isinstance(root.tag, str):
        raise _invalid("the labeling config has no root tag", "wrap the config in <View>...</View>")
    return root


@dataclass
class _Draft:
    """A control being collected while walking the tree (labels arrive after the tag)."""

    name: str
    tag: str
    attrs: dict[str, str]
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    label_set: set[str] = field(default_factory=set)
    paths: list[tuple[str, ...]] = field(default_factory=list)
    path_set: set[tuple[str, ...]] = field(default_factory=set)
    parents: set[tuple[str, ...]] = field(default_factory=set)


@lru_cache(maxsize=32)
def _parse_cached(xml: str, max_depth: int) -> LabelConfig:
    root = _read_xml(xml, max_depth)
    drafts: dict[str, _Draft] = {}
    objects: dict[str, ObjectTag] = {}
    relation_labels: set[str] = set()
    index_flags: list[str] = []
    # (element, nearest enclosing control, label path by value, label path by alias-or-value)
    stack: list[tuple[ElementTree.Element, _Draft | None, tuple[str, ...], tuple[str, ...]]]
    stack = [(root, None, (), ())]
    while stack:
        element, owner, path, alias_path = stack.pop()
        tag = element.tag
        attrs = dict(element.attrib)
        name = attrs.get("name")
        if "indexFlag" in attrs:
            index_flags.append(attrs["indexFlag"])
        if name and attrs.get("toName") and tag not in _NOT_CONTROL_TAGS:
            if name in drafts or name in objects:
                raise _duplicate(name)
            owner = drafts[name] = _Draft(name, tag, attrs)
            path = alias_path = ()
        elif name and (attrs.get("value") or attrs.get("valueList")):
            if name in drafts or name in objects:
                raise _duplicate(name)
            value = attrs.get("value") or attrs.get("valueList") or ""
            field_name = value[1:] if _is_variable(value) else None
            objects[name] = ObjectTag(name, tag, value, field_name, MappingProxyType(attrs))
        elif tag == "Relation" and (attrs.get("value") or attrs.get("alias")):
            relation_labels.update(v for v in (attrs.get("value"), attrs.get("alias")) if v)
        elif tag in _LABEL_TAGS and owner is not None:
            label = attrs.get("value") or attrs.get("alias")
            if label:
                alias = attrs.get("alias") or label
                owner.labels.setdefault(label, attrs)
                owner.label_set.update((label, alias))
                path, alias_path = (*path, label), (*alias_path, alias)
                if path not in owner.path_set:
                    owner.paths.append(path)
                owner.path_set.update((path, alias_path))
                if len(path) > 1:
                    owner.parents.update((path[:-1], alias_path[:-1]))
        for child in reversed(element):
            if isinstance(child.tag, str):
                stack.append((child, owner, path, alias_path))
    if not drafts:
        raise _invalid(
            "the labeling config has no control tag (a tag with name and toName, such as "
            "<Choices>, <Labels> or <RectangleLabels>), so there is nothing to predict",
            'add a control tag, e.g. <Choices name="label" toName="text">...</Choices>',
        )
    controls = {name: _control(draft) for name, draft in drafts.items()}
    return LabelConfig(
        raw=xml,
        hash=hashlib.sha256(xml.encode("utf-8", "surrogatepass")).hexdigest(),
        controls=MappingProxyType(controls),
        objects=MappingProxyType(objects),
        relation_labels=frozenset(relation_labels),
        index_flags=tuple(dict.fromkeys(index_flags)),
        labels_by_object=MappingProxyType(_labels_by_object(controls)),
        tools_by_object=MappingProxyType(_tools_by_object(controls)),
    )


def _control(draft: _Draft) -> ControlTag:
    attrs = draft.attrs
    to_name = tuple(n.strip() for n in attrs["toName"].split(",") if n.strip())
    value = attrs.get("value", "")
    dynamic = _is_variable(value) or bool(attrs.get("apiUrl"))
    choice = None
    if draft.tag == "Choices":
        choice = "multiple" if attrs.get("choice") == "multiple" else "single"
    nested = any(len(p) > 1 for p in draft.paths)
    leaves = frozenset(p for p in draft.path_set if p not in draft.parents)
    return ControlTag(
        name=draft.name,
        tag=draft.tag,
        type=draft.tag.lower(),
        to_name=to_name,
        labels=tuple(draft.labels),
        label_attrs=MappingProxyType({k: MappingProxyType(v) for k, v in draft.labels.items()}),
        dynamic_labels=dynamic,
        choice=choice,
        attrs=MappingProxyType(attrs),
        label_paths=tuple(draft.paths) if nested or draft.tag == "Taxonomy" else (),
        label_set=frozenset(draft.label_set),
        path_set=frozenset(draft.path_set),
        leaf_paths=leaves,
    )


def _labels_by_object(controls: Mapping[str, ControlTag]) -> dict[str, frozenset[str] | None]:
    """Labels a `<Labels>` control offers per object: geometry tools without labels of their
    own (`<Rectangle>`, `<VideoRectangle>` ...) take theirs from it. None: dynamic labels."""
    out: dict[str, frozenset[str] | None] = {}
    for control in controls.values():
        if control.type != "labels":
            continue
        for name in control.to_name:
            known = out.get(name, frozenset())
            if known is None or control.dynamic_labels:
                out[name] = None
            else:
                out[name] = known | control.label_set
    return out


def _tools_by_object(controls: Mapping[str, ControlTag]) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for control in controls.values():
        for name in control.to_name:
            out[name] = out.get(name, frozenset()) | {control.type}
    return out


def _duplicate(name: str) -> InvalidLabelConfig:
    return _invalid(
        f"the labeling config uses the name {name!r} for more than one tag",
        "give every tag a unique name (Label Studio requires it too)",
    )


def _is_variable(value: str) -> bool:
    """`$field` names a task data key (Label Studio's rule: no comma or space after the $)."""
    return len(value) > 1 and value[0] == "$" and "," not in value and " " not in value


def _is_ls_variable(value: str) -> bool:
    """Label Studio's stricter test for dynamic labels in parsed_label_config: `$[A-Za-z_]+`."""
    rest = value[1:]
    return (
        value[:1] == "$"
        and bool(rest)
        and all(c.isascii() and (c.isalpha() or c == "_") for c in rest)
    )


def _conditionals(attrs: Mapping[str, str]) -> dict[str, str] | None:
    if attrs.get("perRegion") != "true":
        return None
    for attr, kind in (
        ("whenTagName", "tag"),
        ("whenLabelValue", "label"),
        ("whenChoiceValue", "choice"),
    ):
        if attrs.get(attr):
            return {"type": kind, "name": attrs[attr]}
    return None


def _tag_set(tag: str | Iterable[str]) -> frozenset[str]:
    if isinstance(tag, str):
        return frozenset((tag.lower(),))
    return frozenset(t.lower() for t in tag)


def _describe(tag: str | Iterable[str]) -> str:
    if isinstance(tag, str):
        return tag
    return " or ".join(tag)
