"""Label selectors: which nodes' labels a job or deployment may be placed on.

In the style of Ray's label scheduling (``In``, ``NotIn``, ``Exists``, ``DoesNotExist``)
and Kubernetes' node affinity: ``label_selector={"zone": In("shop-7", "shop-8"),
"gpu-class": NotIn("consumer"), "ssd": Exists()}`` (a plain string is ``In`` of that
one value). Every requirement must hold (AND); a device's labels are its node's (an
agent's ``--label key=value``, its ``site``) together with those its backend gives it
(a Ray node's labels, as ``label.<key>`` in the device's ``extra``; the device's win).

Keys and values follow Kubernetes' label syntax, so labels from its nodes and Ray's
carry over unchanged: a key is ``name`` or ``prefix/name`` (``name`` 1–63 characters of
letters, digits, ``-``, ``_``, ``.``, starting and ending with a letter or digit;
``prefix`` a DNS subdomain of at most 253); a value is empty or like a ``name``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from anypu.errors import ConfigError

__all__ = [
    "DEVICE_LABEL_PREFIX",
    "OPERATORS",
    "DoesNotExist",
    "Exists",
    "In",
    "LabelMatch",
    "LabelRequirement",
    "NotIn",
    "check_requirements",
    "device_labels",
    "label_requirements",
    "parse_selector",
    "selector_text",
]

#: The operators a requirement may use, as they travel on the wire.
OPERATORS = ("in", "not_in", "exists", "does_not_exist")
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_EXAMPLE = 'label_selector={"zone": In("shop-7"), "gpu-class": NotIn("consumer")}'
#: Where a backend puts a device's own labels in ``Device.extra``.
DEVICE_LABEL_PREFIX = "label."


@dataclass(frozen=True)
class LabelMatch:
    """What a key must match (``In(…)``, ``NotIn(…)``, ``Exists()``, ``DoesNotExist()``)."""

    operator: str
    values: tuple[str, ...] = ()


def In(*values: str) -> LabelMatch:  # noqa: N802 - named as Ray and Kubernetes name it
    """The label is present and one of ``values``."""
    return LabelMatch("in", tuple(values))


def NotIn(*values: str) -> LabelMatch:  # noqa: N802
    """The label is absent, or none of ``values``."""
    return LabelMatch("not_in", tuple(values))


def Exists() -> LabelMatch:  # noqa: N802
    """The label is present, with any value."""
    return LabelMatch("exists")


def DoesNotExist() -> LabelMatch:  # noqa: N802
    """The label is absent."""
    return LabelMatch("does_not_exist")


@dataclass(frozen=True)
class LabelRequirement:
    """One key's requirement, as placement checks it and the wire carries it."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "exists":
            return self.key in labels
        if self.operator == "does_not_exist":
            return self.key not in labels
        present = self.key in labels and labels[self.key] in self.values
        return present if self.operator == "in" else not present

    def __str__(self) -> str:
        if self.operator in ("exists", "does_not_exist"):
            return f"{self.key} {'exists' if self.operator == 'exists' else 'absent'}"
        word = "in" if self.operator == "in" else "not in"
        return f"{self.key} {word} ({', '.join(self.values)})"


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key:
        raise ConfigError(f"label_selector keys must be label names, got {key!r}: {_EXAMPLE}")
    prefix, _, name = key.rpartition("/")
    if (prefix and (len(prefix) > 253 or not _PREFIX.fullmatch(prefix))) or not _NAME.fullmatch(
        name
    ):
        raise ConfigError(
            f"label_selector key {key!r} is not a label name: 1-63 letters, digits, '-', '_'"
            " or '.', starting and ending with a letter or digit, optionally after a DNS"
            f" prefix and '/' (kubernetes.io/hostname); e.g. {_EXAMPLE}"
        )
    return key


def _check_values(key: str, match: LabelMatch) -> tuple[str, ...]:
    if match.operator in ("exists", "does_not_exist"):
        if match.values:
            raise ConfigError(
                f"label_selector[{key!r}]: Exists() and DoesNotExist() take no values"
            )
        return ()
    if not match.values:
        raise ConfigError(
            f"label_selector[{key!r}]: {'In' if match.operator == 'in' else 'NotIn'}() needs at"
            f' least one value, e.g. In("shop-7"); Exists() matches any value'
        )
    for value in match.values:
        if not isinstance(value, str) or (value and not _NAME.fullmatch(value)):
            raise ConfigError(
                f"label_selector[{key!r}]: {value!r} is not a label value (a string of at most"
                " 63 letters, digits, '-', '_' or '.', starting and ending with a letter or"
                f" digit); e.g. {_EXAMPLE}"
            )
    return tuple(sorted(set(match.values)))


def label_requirements(selector: object) -> tuple[LabelRequirement, ...]:
    """``selector`` (a mapping of label keys to ``In(…)``/``NotIn(…)``/``Exists()``/
    ``DoesNotExist()`` or a plain value; or requirements already) checked and in a
    stable order; ``ConfigError`` with an example for anything else."""
    if selector is None or selector == ():
        return ()
    if isinstance(selector, tuple) and all(isinstance(r, LabelRequirement) for r in selector):
        return tuple(sorted(selector, key=lambda r: r.key))
    if not isinstance(selector, Mapping):
        raise ConfigError(
            f"label_selector must be a mapping of label keys to what they must match, got"
            f" {type(selector).__name__}: {_EXAMPLE}"
        )
    requirements = []
    for key, wanted in selector.items():
        key = _check_key(key)
        match = In(wanted) if isinstance(wanted, str) else wanted
        if not isinstance(match, LabelMatch) or match.operator not in OPERATORS:
            raise ConfigError(
                f"label_selector[{key!r}] = {wanted!r}: give In(…), NotIn(…), Exists(),"
                f" DoesNotExist() (from anypu.sdk) or a plain value; e.g. {_EXAMPLE}"
            )
        requirements.append(LabelRequirement(key, match.operator, _check_values(key, match)))
    return tuple(sorted(requirements, key=lambda r: r.key))


def parse_selector(items: Iterable[str]) -> dict[str, LabelMatch]:
    """Command-line requirements, one per item, as ``kubectl`` writes selectors:
    ``zone=shop-7,shop-8`` (in), ``zone!=shop-9`` (not in), ``ssd`` (exists), ``!gpu``
    (does not exist)."""
    selector: dict[str, LabelMatch] = {}
    for item in items:
        text = item.strip()
        if "!=" in text:
            key, _, values = text.partition("!=")
            match = NotIn(*values.split(","))
        elif "=" in text:
            key, _, values = text.partition("=")
            match = In(*values.split(","))
        elif text.startswith("!"):
            key, match = text[1:], DoesNotExist()
        else:
            key, match = text, Exists()
        if key.strip() in selector:
            raise ConfigError(f"--label-selector names {key.strip()!r} twice: give it once")
        selector[key.strip()] = match
    return selector


def check_requirements(requirements: Iterable[LabelRequirement]) -> None:
    """Refuse requirements off the wire that ``label_requirements`` would not have made
    (a client of the protocol, not the SDK): ``ConfigError`` saying which and why."""
    for r in requirements:
        if r.operator not in OPERATORS:
            raise ConfigError(
                f"label selector on {r.key!r}: operator {r.operator[:20]!r} is unknown; use"
                f" one of {list(OPERATORS)}"
            )
        _check_values(_check_key(r.key), LabelMatch(r.operator, r.values))


def device_labels(node_labels: Mapping[str, str], extra: Mapping[str, Any]) -> dict[str, str]:
    """A device's labels: its node's, and its own from its backend (``label.<key>`` in
    ``Device.extra``), which win."""
    own = {
        k[len(DEVICE_LABEL_PREFIX) :]: str(v)
        for k, v in extra.items()
        if k.startswith(DEVICE_LABEL_PREFIX)
    }
    return {**node_labels, **own}


def selector_text(requirements: Iterable[LabelRequirement]) -> str:
    return ", ".join(str(r) for r in requirements)
