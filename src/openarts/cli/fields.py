"""Fields of a create body that ModelArts does not know, for `openarts submit` to warn about.

The server accepts what ModelArts accepts and ignores what it does not know, as ModelArts does, so a
typo (`node_cont`) would silently run a one-node job. The CLI walks the submitted body against the
field tree of the official SDK's create-body model (`Job`, huaweicloudsdkmodelarts 3.1.219), kept in
`create_body.json` beside this file so that the CLI does not need the SDK: an object is a JSON object
of its fields, a list `[item]`, a map `{"*": value}`, a scalar its type name. Regenerate it with
`python -m openarts.cli.fields > src/openarts/cli/create_body.json` (needs the SDK installed).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from openarts.core.suggest import did_you_mean

TREE_FILE = Path(__file__).with_name("create_body.json")
MAX_WARNINGS = 20


@dataclass(frozen=True)
class UnknownField:
    path: str  # e.g. "spec.resource.node_cont", "algorithm.inputs[0].remote.obs.url"
    suggestion: str | None  # the known field it is closest to, if any

    def __str__(self) -> str:
        hint = f"; did you mean {self.suggestion!r}?" if self.suggestion else ""
        return f"{self.path} is not a ModelArts field (the server ignores it){hint}"


def shipped_tree() -> dict[str, Any]:
    """The SDK's tree as `create_body.json` holds it."""
    tree: dict[str, Any] = json.loads(TREE_FILE.read_text(encoding="utf-8"))
    return tree


@cache
def create_body_tree() -> dict[str, Any]:
    """The SDK's tree, and what openarts takes beyond it: a role's `command` and `parameters`, as a plain
    job's algorithm has them (docs/HETEROGENEOUS.md)."""
    tree = shipped_tree()
    role = tree["tasks"][0]["algorithm"]
    role.setdefault("command", tree["algorithm"]["command"])
    role.setdefault("parameters", tree["algorithm"]["parameters"])
    return tree


def unknown_fields(body: Any, tree: Any = None, path: str = "") -> list[UnknownField]:
    """Every key of `body` that the tree does not have, depth first in the body's order. Values of an
    unexpected type are not looked into: the server says what is wrong with them."""
    tree = create_body_tree() if tree is None else tree
    found: list[UnknownField] = []
    if isinstance(tree, list) and isinstance(body, list):
        for i, item in enumerate(body):
            found += unknown_fields(item, tree[0], f"{path}[{i}]")
    elif isinstance(tree, dict) and isinstance(body, dict):
        for key, value in body.items():
            where = f"{path}.{key}" if path else str(key)
            if "*" in tree:  # a map: any key
                found += unknown_fields(value, tree["*"], where)
            elif key in tree:
                found += unknown_fields(value, tree[key], where)
            else:
                found.append(UnknownField(where, did_you_mean(str(key), tree)))
    return found


# ---------------------------------------------------------------------------------------------------- generator


def sdk_tree(models: ModuleType, name: str = "Job") -> Any:
    """The field tree of SDK model `name` (by its JSON keys, attribute_map), from the SDK's models."""
    def of_type(t: str, seen: tuple[str, ...]) -> Any:
        if m := re.fullmatch(r"list\[(.+)\]", t):
            return [of_type(m.group(1), seen)]
        if m := re.fullmatch(r"dict\(str, (.+)\)", t):
            return {"*": of_type(m.group(1), seen)}
        cls = getattr(models, t, None)
        if cls is None or not hasattr(cls, "openapi_types"):
            return t
        if t in seen:  # a recursive model: stop checking below it
            return "object"
        return {cls.attribute_map[attr]: of_type(sub, (*seen, t)) for attr, sub in cls.openapi_types.items()}

    return of_type(name, ())


if __name__ == "__main__":
    from huaweicloudsdkmodelarts.v1 import model

    json.dump(sdk_tree(model), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
