"""Standing promises of the repository: the README's two commands, and CI running the README's test command."""

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_starts_with_demo_then_test_command():
    demo, tests = readme_commands()
    assert "pip install" in demo and demo.endswith("python -m auditors scan --demo")
    assert "pip install" in tests and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    _, tests = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert tests in ci.splitlines()


def test_demo_and_docs_ship_with_the_package():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = project["tool"]["setuptools"]["package-data"]["auditors"]
    demo_files = [p for p in (ROOT / "auditors" / "demo").iterdir() if p.is_file()]
    assert {"resources.json", "resourcecontainers.json", "authorizationresources.jsonl", "pairs.yaml"} <= {
        p.name for p in demo_files}
    for file in demo_files:
        assert any(fnmatch.fnmatch(f"demo/{file.name}", pattern) for pattern in patterns), f"{file.name} not shipped"
