"""The agent-framework adapters are optional: importing the package imports no framework, and an adapter whose
framework is missing says which extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

FRAMEWORKS = {  # adapter module: (the framework's top-level package, the extra)
    "openai_agents": ("agents", "openai-agents"),
    "langchain": ("langchain_core", "langchain"),
    "llama_index": ("llama_index", "llama-index"),
}


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_importing_the_package_imports_no_framework() -> None:
    frameworks = [package for package, _ in FRAMEWORKS.values()]
    result = python(
        "import sys, conversation_codec, conversation_codec.integrations\n"
        f"print([m for m in {frameworks!r} if m in sys.modules])"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("adapter", sorted(FRAMEWORKS))
def test_a_missing_framework_names_the_extra(adapter: str) -> None:
    package, extra = FRAMEWORKS[adapter]
    # A None entry in sys.modules makes `import package` fail as if it were not installed.
    result = python(f"import sys; sys.modules[{package!r}] = None\nimport conversation_codec.integrations.{adapter}")
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert f'pip install "conversation-codec[{extra}]"' in result.stderr
