"""Where a connection sends: Braze's instance names and endpoint URLs, from reflow_project.yml to the
destination's base URL (braze-api.md §1.1, Braze's "API and SDK endpoints" page)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.destinations.braze.destination import BrazeDestination
from engine.errors import ProjectError
from engine.project import Project, load_project
from engine.specs import DestinationSpec, Identifier, SyncSpec

USERS = SyncSpec("s", "m", ("id",), DestinationSpec("braze", "users", identifier=Identifier("external_id", "id")))


def project(root: Path, setting: str) -> Project:
    (root / "reflow_project.yml").write_text(textwrap.dedent(f"""\
        name: p
        connections:
          braze:
            type: braze
            {setting}
    """))
    return load_project(root)


def base_url(p: Project) -> str:
    return BrazeDestination(p.connections["braze"], None, USERS).base_url


def problem(root: Path, setting: str) -> str:
    with pytest.raises(ProjectError) as info:
        project(root, setting)
    return info.value.message


@pytest.mark.parametrize(("instance", "url"), [
    ("iad-01", "https://rest.iad-01.braze.com"),
    ("IAD-07", "https://rest.iad-07.braze.com"),
    ("US-01", "https://rest.iad-01.braze.com"),
    ("us-03", "https://rest.iad-03.braze.com"),
    ("US-08", "https://rest.iad-08.braze.com"),
    ("US-10", "https://rest.us-10.braze.com"),
    ("us-10", "https://rest.us-10.braze.com"),
    ("EU-01", "https://rest.fra-01.braze.eu"),
    ("eu-02", "https://rest.fra-02.braze.eu"),
    ("fra-01", "https://rest.fra-01.braze.eu"),
    ("FRA-02", "https://rest.fra-02.braze.eu"),
    ("AU-01", "https://rest.au-01.braze.com"),
    ("au-01", "https://rest.au-01.braze.com"),
])
def test_an_instance_in_the_project_file_reaches_the_destination(tmp_path: Path, instance: str, url: str) -> None:
    p = project(tmp_path, f"instance: {instance}")
    assert p.connections["braze"].endpoint == url
    assert base_url(p) == url                # was: "set either endpoint or instance, not both" on every plan
    assert p.warnings == ()


@pytest.mark.parametrize(("instance", "url"), [
    ("iad-09", "https://rest.iad-09.braze.com"),
    ("fra-03", "https://rest.fra-03.braze.eu"),
    ("us-11", "https://rest.us-11.braze.com"),
    ("AU-02", "https://rest.au-02.braze.com"),
])
def test_a_newer_cluster_is_assumed_with_a_located_warning(tmp_path: Path, instance: str, url: str) -> None:
    p = project(tmp_path, f"instance: {instance}")
    assert base_url(p) == url
    assert p.warnings == (
        f"reflow_project.yml:5:15: connections.braze.instance: '{instance}' is not among the Braze instances this "
        "Reflow version knows (iad-01, iad-02, iad-03, iad-04, iad-05, iad-06, iad-07, iad-08, us-10, fra-01, "
        f"fra-02, au-01); assuming its REST endpoint is {url}. If your dashboard shows another REST endpoint, "
        "set endpoint: to it instead",)


KNOWN = ("the instances are dashboard names US-01, US-02, US-03, US-04, US-05, US-06, US-07, US-08, US-10, "
         "EU-01, EU-02, AU-01; cluster names iad-01, iad-02, iad-03, iad-04, iad-05, iad-06, iad-07, iad-08, "
         "us-10, fra-01, fra-02, au-01 (or set endpoint: to the REST endpoint URL of your Braze dashboard)")


@pytest.mark.parametrize(("instance", "why"), [
    ("US-09", "'US-09' is not a Braze instance"),        # a dashboard name never maps to a host that does not exist
    ("eu-03", "'eu-03' is not a Braze instance"),
    ("us-00", "'us-00' is not a Braze instance"),
    ("sfo-01", "'sfo-01' is not a known Braze instance"),
    ("iad-1", "'iad-1' is not a known Braze instance"),
    ("rest.iad-01.braze.com", "'rest.iad-01.braze.com' looks like a URL or host name; write it as endpoint: "
                              "https://rest.<cluster>.braze.com"),
])
def test_an_instance_that_does_not_exist_is_a_located_error(tmp_path: Path, instance: str, why: str) -> None:
    assert problem(tmp_path, f"instance: {instance}").splitlines() == [
        f"reflow_project.yml:5:15: connections.braze.instance: {why}; {KNOWN}",
        "1 problem in reflow_project.yml"]


@pytest.mark.parametrize(("endpoint", "url"), [
    ("https://rest.iad-01.braze.com", "https://rest.iad-01.braze.com"),
    ("https://rest.iad-09.braze.com/", "https://rest.iad-09.braze.com"),     # any rest.<cluster> host
    ("https://rest.fra-05.braze.eu", "https://rest.fra-05.braze.eu"),
    ("https://rest.us-12.braze.com", "https://rest.us-12.braze.com"),
    ("https://REST.AU-01.Braze.com", "https://rest.au-01.braze.com"),
    ("https://braze-proxy.corp.example:8443/braze/", "https://braze-proxy.corp.example:8443/braze"),
    ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
    ("http://[::1]:8000", "http://[::1]:8000"),
])
def test_endpoint_urls(tmp_path: Path, endpoint: str, url: str) -> None:
    p = project(tmp_path, f'endpoint: "{endpoint}"')
    assert base_url(p) == url
    assert p.warnings == ()


def test_a_known_cluster_on_the_wrong_domain_is_a_warning(tmp_path: Path) -> None:
    p = project(tmp_path, "endpoint: https://rest.fra-01.braze.com")
    assert base_url(p) == "https://rest.fra-01.braze.com"
    assert p.warnings == ("reflow_project.yml:5:15: connections.braze.endpoint: Braze lists the REST endpoint of "
                          "fra-01 as https://rest.fra-01.braze.eu, not https://rest.fra-01.braze.com",)


@pytest.mark.parametrize(("endpoint", "message"), [
    ("https://sdk.iad-03.braze.com", "sdk.iad-03.braze.com is Braze's SDK endpoint; the REST API of that instance "
                                     "is https://rest.iad-03.braze.com"),
    ("https://dashboard-02.braze.eu", "dashboard-02.braze.eu is the Braze dashboard, not the REST API; its REST "
                                      "endpoint is https://rest.fra-02.braze.eu"),
    ("https://dashboard.au-01.braze.com", "dashboard.au-01.braze.com is the Braze dashboard, not the REST API; its "
                                          "REST endpoint is https://rest.au-01.braze.com"),
    ("http://rest.iad-01.braze.com", "plain http:// would send the API key unencrypted; use https:// "
                                     "(or allow_http: true for testing)"),
    ("https://rest.iad-01.braze.com:99999", "'https://rest.iad-01.braze.com:99999' has an invalid port"),
])
def test_endpoints_that_are_not_a_rest_api_are_located_errors(tmp_path: Path, endpoint: str, message: str) -> None:
    assert problem(tmp_path, f"endpoint: {endpoint}").splitlines()[0] == (
        f"reflow_project.yml:5:15: connections.braze.endpoint: {message}")


def test_endpoint_and_instance_together_are_refused_by_the_schema(tmp_path: Path) -> None:
    text = problem(tmp_path, "endpoint: https://rest.iad-01.braze.com\n" + " " * 12 + "instance: iad-01")
    assert text.splitlines()[0] == "reflow_project.yml:3:3: connections.braze: give exactly one of endpoint, instance"


def test_the_cli_prints_the_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    project(tmp_path, "instance: iad-09")
    (tmp_path / "syncs").mkdir()
    assert main(["--project-dir", str(tmp_path), "ls"]) == 0
    assert "warning: reflow_project.yml:5:15: connections.braze.instance: 'iad-09' is not among" in (
        capsys.readouterr().err)
