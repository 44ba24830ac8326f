"""House rules that keep the code base honest."""

import re
from pathlib import Path

import pipeline

PKG = Path(pipeline.__file__).parent


def test_prefect_is_imported_only_in_flows():
    imports = re.compile(r"^\s*(import prefect|from prefect)", re.M)
    users = sorted(p.name for p in PKG.rglob("*.py") if imports.search(p.read_text()))
    assert users == ["flows.py"]
    assert len(list(PKG.rglob("*.py"))) > len(list(PKG.glob("*.py")))  # subpackages are looked at too


def test_no_pickle_loading_anywhere():
    for p in PKG.rglob("*.py"):
        text = p.read_text()
        assert "pickle.load" not in text, p.name
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{p.name}: {line.strip()}"
