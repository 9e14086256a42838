"""README.md says what the code assumes of its readers (the docs, not a package module)."""

from __future__ import annotations

from helpers import REPO


def test_docs_bind_tensorboard_to_localhost():
    readme = (REPO / "README.md").read_text()
    assert "tensorboard --logdir outputs --host 127.0.0.1" in readme


def test_readme_lists_what_goes_wrong():
    readme = (REPO / "README.md").read_text()
    assert "## When things go wrong" in readme
