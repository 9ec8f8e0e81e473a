"""Package metadata: CITATION.cff agrees with pyproject.toml, which setuptools accepts.

cffconvert (the reference validator) is not installed offline: the keys CFF 1.2.0
requires are checked by hand instead.
"""

from pathlib import Path

import pytest
import yaml

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).parent.parent
REPOSITORY = "https://github.com/napari-volsr/napari-volsr"


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


@pytest.fixture(scope="module")
def citation():
    return yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def test_citation_has_the_keys_cff_requires(citation):
    assert citation["cff-version"] == "1.2.0"
    for key in ("message", "title", "authors"):
        assert citation[key], key
    assert all("name" in a or "family-names" in a for a in citation["authors"])


def test_citation_agrees_with_pyproject(citation, project):
    assert citation["version"] == project["version"]
    assert citation["license"] == project["license"]
    assert citation["repository-code"] == project["urls"]["Source"] == REPOSITORY
    assert [a["name"] for a in citation["authors"]] == [a["name"] for a in project["authors"]]


def test_setuptools_accepts_the_metadata(monkeypatch):
    """Classifiers and URLs as an installer will see them (a bad entry fails here)."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(ROOT)  # readme and license files are found relative to the project
    metadata = apply_configuration(Distribution(), "pyproject.toml").metadata
    classifiers = set(metadata.get_classifiers())
    assert {"Development Status :: 3 - Alpha", "Framework :: napari",
            "Intended Audience :: Science/Research",
            "Programming Language :: Python :: 3.11", "Programming Language :: Python :: 3.12",
            "Topic :: Scientific/Engineering :: Image Processing"} <= classifiers
    urls = dict(metadata.project_urls)
    assert urls["Issues"] == f"{REPOSITORY}/issues"
    assert urls["Documentation"].startswith(REPOSITORY)
    assert urls["Homepage"] == REPOSITORY
