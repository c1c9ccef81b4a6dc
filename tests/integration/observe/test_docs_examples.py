"""Every AlertRule and SLO example in docs/metrics.md is a valid manifest whose rules the
real ``promtool`` accepts: the examples users copy work as written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from socle.engine.kinds.alertrule import check_groups
from socle.model.alertrule import AlertRule, to_rule_group
from socle.model.slo import SLO
from socle.model.slo import to_rule_groups as slo_rule_groups

DOC = Path(__file__).parents[3] / "docs" / "metrics.md"

pytestmark = pytest.mark.skipif(not shutil.which("promtool"), reason="needs Debian's promtool")


def examples() -> list[dict[str, Any]]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)
    docs = [d for block in blocks for d in yaml.safe_load_all(block) if isinstance(d, dict)]
    return [d for d in docs if d.get("kind") in ("AlertRule", "SLO")]


def test_the_docs_hold_rule_examples_of_every_form() -> None:
    found = examples()
    specs = [d["spec"] for d in found]
    assert any("expr" in s for s in specs) and any("logQuery" in s for s in specs)
    assert any("errors" in s for s in specs) and any("good" in s for s in specs)
    assert any("socle_ingress" in s.get("total", "") for s in specs)


@pytest.mark.parametrize("doc", examples(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
async def test_each_example_is_valid_and_promtool_accepts_its_rules(doc: dict[str, Any]) -> None:
    if doc["kind"] == "AlertRule":
        obj: AlertRule | SLO = AlertRule.model_validate(doc)
        spec = obj.model_dump(mode="json", by_alias=True)["spec"]
        groups = [to_rule_group(obj.name, spec)]
    else:
        obj = SLO.model_validate(doc)
        spec = obj.model_dump(mode="json", by_alias=True)["spec"]
        groups = slo_rule_groups(obj.name, spec)
    assert await check_groups(shutil.which("promtool") or "promtool", groups) is None
