"""Item text templating: which fields, in which order, cleaned the same way at train and serve time."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_SPACE = re.compile(r"\s+")
_TAG = re.compile(r"<[^>]{0,200}>")


def clean(value: Any) -> str:
    """Field value to plain text: lists joined with ', ', HTML entities decoded, tags and runs of space removed."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = ", ".join(clean(v) for v in value if clean(v))
    text = html.unescape(str(value))
    text = _TAG.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class TextTemplate:
    """Renders `fields` of an item's metadata joined by `sep`, skipping empty ones, cut to `max_chars`.

    With `sep` ". " each part loses its trailing '.', so "Pens." + ". " + "Acme" reads "Pens. Acme".
    The spec string (`fields=title,genres;sep= | ;max_chars=2000`) is stored in bundle manifests.
    """

    fields: tuple[str, ...]
    sep: str = ". "
    max_chars: int = 2000

    def render(self, meta: Mapping[str, Any]) -> str:
        parts = [clean(meta.get(f)) for f in self.fields]
        if self.sep.strip() == ".":
            parts = [p.rstrip(". ") for p in parts]
        text = self.sep.join(p for p in parts if p)
        return text[: self.max_chars].rstrip()

    def spec(self) -> str:
        return f"fields={','.join(self.fields)};sep={self.sep};max_chars={self.max_chars}"

    @classmethod
    def parse(cls, spec: str) -> TextTemplate:
        """Inverse of `spec()`; raises ValueError naming the bad key."""
        values: dict[str, str] = {}
        for part in spec.split(";"):
            key, eq, value = part.partition("=")
            if not eq or key not in ("fields", "sep", "max_chars"):
                raise ValueError(f"template: expected fields=…;sep=…;max_chars=…, got {part!r}")
            values[key] = value
        if not values.get("fields"):
            raise ValueError("template: 'fields' must name at least one field")
        max_chars = int(values.get("max_chars", "2000"))
        if max_chars < 1:
            raise ValueError(f"template: max_chars must be >= 1, got {max_chars}")
        return cls(tuple(values["fields"].split(",")), values.get("sep", ". "), max_chars)


MOVIELENS = TextTemplate(("title", "genres"), sep=" | ")
AMAZON = TextTemplate(("title", "brand", "categories", "description"), sep=". ")
