"""Publishing (issue 17, part 8): the GitHub Actions workflow and the repository/launch buttons.

GitHub Actions cannot run here, so the workflow is read as data: it runs `make test` on every push
and pull request in a Debian bookworm container (Debian's Chromium for the browser checks), caches
pip and the embedding cache, and deploys the book to GitHub Pages only from main, after the tests.
The buttons: with `repository.url` blank (as committed) no repository or launch button is built;
setting the URL alone turns on the Repository button and the Binder and Colab buttons.
"""

from __future__ import annotations

import importlib.util

import pytest
import yaml
from book_build import REPO

WORKFLOW = REPO / ".github" / "workflows" / "book.yml"
MAIN_PUSH = "github.event_name == 'push' && github.ref == 'refs/heads/main'"


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _runs(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def _uses(job: dict, action: str) -> list[dict]:
    return [step for step in job["steps"] if step.get("uses", "").split("@")[0] == action]


def test_every_push_and_pull_request_runs_make_test_in_debian(workflow):
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as True
    assert {"push", "pull_request"} <= set(triggers)
    assert triggers["push"] is None and triggers["pull_request"] is None, (
        "tests must run on every branch"
    )
    test = workflow["jobs"]["test"]
    assert "if" not in test
    assert test["container"].endswith("-bookworm"), test["container"]
    runs = _runs(test)
    assert any(line.strip() == "make test" for run in runs for line in run.splitlines()), runs
    install = next(run for run in runs if "apt-get install" in run)
    assert "chromium" in install.split() and "chromium-driver" in install.split(), install
    assert runs.index(install) < next(i for i, run in enumerate(runs) if "make test" in run)
    assert test["env"]["CI"], "CI must be set so that a missing Chromium fails the browser checks"


def test_pip_and_the_embedding_cache_are_cached(workflow):
    test = workflow["jobs"]["test"]
    cached = {step["with"]["path"] for step in _uses(test, "actions/cache")}
    assert test["env"]["PIP_CACHE_DIR"] in cached
    assert test["env"]["IMAGE_SEARCH_CACHE"] in cached
    assert test["env"]["IMAGE_SEARCH_CACHE"].startswith("/"), "the package does not expand ~"


def test_the_book_is_deployed_to_pages_only_from_main_after_the_tests(workflow):
    test, deploy = workflow["jobs"]["test"], workflow["jobs"]["deploy"]
    upload = _uses(test, "actions/upload-pages-artifact")
    assert len(upload) == 1 and upload[0]["with"]["path"] == "_build/html"
    build = next(step for step in test["steps"] if step.get("run", "").strip() == "make book")
    for step in (build, upload[0]):
        assert step["if"] == MAIN_PUSH, step
    steps = test["steps"]
    assert steps.index(build) < steps.index(upload[0])
    assert steps.index(build) > next(
        i for i, s in enumerate(steps) if s.get("run", "").strip() == "make test"
    )
    assert deploy["needs"] == "test" and deploy["if"] == MAIN_PUSH
    assert _uses(deploy, "actions/deploy-pages")
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert workflow["permissions"] == {"contents": "read"}, "only the deploy job may write"


def _switch():
    spec = importlib.util.spec_from_file_location(
        "repository_buttons", REPO / "book" / "_ext" / "repository_buttons.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.switch_buttons


def _theme_options(config: dict) -> dict:
    """The theme options Sphinx gets from a _config.yml, after the book's extension has run."""
    from jupyter_book.config import yaml_to_sphinx

    return _switch()(yaml_to_sphinx(config)[0]["html_theme_options"])


def test_buttons_are_off_while_the_repository_url_is_blank():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert config["repository"]["url"] == "", "the committed book has no public repository yet"
    assert "repository_buttons" in config["sphinx"]["local_extensions"]
    options = _theme_options(config)
    assert options["use_repository_button"] is False
    assert not any(
        options["launch_buttons"].get(k) for k in ("binderhub_url", "colab_url", "thebe")
    )


def test_setting_the_repository_url_alone_turns_the_buttons_on():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    config["repository"]["url"] = "https://github.com/example/visual-product-search"
    options = _theme_options(config)
    assert options["use_repository_button"] is True
    assert options["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert options["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert options["launch_buttons"]["notebook_interface"] == "jupyterlab"


def test_binder_installs_the_requirements_and_the_package():
    binder = REPO / "binder"
    assert "-r ../requirements.txt" in (binder / "requirements.txt").read_text().splitlines()
    post_build = binder / "postBuild"
    assert post_build.stat().st_mode & 0o111, "postBuild must be executable"
    assert "pip install --no-deps -e ." in post_build.read_text()
