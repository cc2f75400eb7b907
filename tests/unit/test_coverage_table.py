"""docs/API.md's coverage table lists each of the SDK's training operations once, with what it answers:
served (a route of api/routes.py), or 501 from api/unimplemented.py (not supported here / not implemented)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from openarts.api.routes import ROUTES
from openarts.api.unimplemented import NOT_IMPLEMENTED, NOT_SUPPORTED

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| \d+ \| `(\w+)` \| (\w+) \| `([^`]+)` \| (\w+) \| (.+) \|$")


def _shape(path: str) -> str:
    return re.sub(r"{\w+}", "{}", path)


def test_the_coverage_table_is_the_sdks_operations_and_what_each_answers() -> None:
    ops = list(csv.DictReader((ROOT / "tests/data/training-operations.tsv").open(), delimiter="\t"))
    table = {m.group(1): m.groups()[1:] for line in (ROOT / "docs/API.md").read_text().splitlines()
             if (m := ROW.match(line))}
    assert set(table) == {o["sdk_operation"] for o in ops} and len(ops) == 48
    served = {(method, _shape(r.path)) for r in ROUTES for method in (r.methods or set())}
    not_supported = {op for _, _, op, _ in NOT_SUPPORTED}
    not_implemented = {op for _, _, op in NOT_IMPLEMENTED}
    for o in ops:
        method, path, response, answers = table[o["sdk_operation"]]
        assert (method, path, response) == (o["method"], o["path"].removeprefix("/v2/{project_id}"), o["response"])
        if o["sdk_operation"] in not_supported:
            assert answers == "501 ModelArts.4204: not supported here"
        elif o["sdk_operation"] in not_implemented:
            assert answers == "501 ModelArts.0501"
        else:
            assert answers == "served" and (method, _shape(o["path"])) in served, o["sdk_operation"]
