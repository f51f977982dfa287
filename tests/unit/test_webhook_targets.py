"""Which webhook targets are refused: internal addresses, credentials, names resolving inward.

The resolver is the outside world: it is replaced here, in process."""

from __future__ import annotations

import re

import pytest

from rewardmiles.webhooks import targets
from rewardmiles.webhooks.targets import TargetError

PUBLIC = "93.184.216.34"


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    answers: dict[str, list[str]] = {}

    def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise TargetError(f"{host} cannot be resolved")
        return answers[host]

    monkeypatch.setattr(targets, "resolve", resolve)
    return answers


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://10.1.2.3/hook", "private"),
        ("https://172.16.0.1/hook", "private"),
        ("https://192.168.1.10/hook", "private"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://127.8.9.10:8443/hook", "loopback"),
        ("https://localhost/hook", "loopback"),
        ("https://api.localhost/hook", "loopback"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://224.0.0.1/hook", "multicast"),
        ("https://240.0.0.1/hook", "reserved"),
        ("https://100.64.0.1/hook", "not a public"),
        ("https://[::1]/hook", "loopback"),
        ("https://[::]/hook", "unspecified"),
        ("https://[fd12:3456::1]/hook", "private"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://[ff02::1]/hook", "multicast"),
        ("https://[::ffff:169.254.169.254]/hook", "link-local"),
        ("https://[::ffff:10.0.0.1]/hook", "private"),
        ("https://[64:ff9b::a9fe:a9fe]/hook", "link-local"),
        ("https://[2002:a9fe:a9fe::1]/hook", "link-local"),
        ("http://2130706433/hook", "loopback"),  # 127.0.0.1 written as a number
        ("http://0x7f.1/hook", "loopback"),
    ],
)
def test_internal_targets_are_refused(url: str, why: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Numeric forms only a real resolver turns into addresses: inet_aton's, without DNS.
    import socket

    def resolve(host: str, port: int) -> list[str]:
        return [socket.inet_ntoa(socket.inet_aton(host))]

    monkeypatch.setattr(targets, "resolve", resolve)
    with pytest.raises(TargetError, match=why):
        targets.check_url(url, allow_private=False)


def test_a_name_resolving_to_an_internal_address_is_refused(dns: dict[str, list[str]]) -> None:
    dns["hooks.partner.example"] = ["10.20.30.40"]
    with pytest.raises(
        TargetError, match=re.escape("hooks.partner.example resolves to 10.20.30.40")
    ):
        targets.check_url("https://hooks.partner.example/h", allow_private=False)
    dns["mixed.partner.example"] = [PUBLIC, "169.254.169.254"]
    with pytest.raises(TargetError, match="link-local"):
        targets.check_url("https://mixed.partner.example/h", allow_private=False)


def test_a_name_that_does_not_resolve_is_refused(dns: dict[str, list[str]]) -> None:
    with pytest.raises(TargetError, match="cannot be resolved"):
        targets.check_url("https://nowhere.partner.example/h", allow_private=False)


def test_a_public_target_is_accepted(dns: dict[str, list[str]]) -> None:
    dns["hooks.partner.example"] = [PUBLIC, "2606:2800:220:1:248:1893:25c8:1946"]
    targets.check_url("https://hooks.partner.example/h?x=1", allow_private=False)
    targets.check_url(f"https://{PUBLIC}:8443/h", allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:hunter2@hooks.partner.example/h",
        "https://user@hooks.partner.example/h",
        "https://:hunter2@hooks.partner.example/h",
        "https://@hooks.partner.example/h",
    ],
)
def test_credentials_in_the_url_are_refused_even_when_private_targets_are_allowed(
    url: str, dns: dict[str, list[str]]
) -> None:
    dns["hooks.partner.example"] = [PUBLIC]
    for allow in (False, True):
        with pytest.raises(TargetError, match="credentials") as refused:
            targets.check_url(url, allow_private=allow)
        assert "hunter2" not in str(refused.value)


def test_http_is_refused_but_for_loopback_when_private_targets_are_allowed(
    dns: dict[str, list[str]],
) -> None:
    dns["hooks.partner.example"] = [PUBLIC]
    with pytest.raises(TargetError, match="https"):
        targets.check_url("http://hooks.partner.example/h", allow_private=True)
    with pytest.raises(TargetError, match="loopback"):
        targets.check_url("http://127.0.0.1:9/h", allow_private=False)
    targets.check_url("http://127.0.0.1:9/h", allow_private=True)
    targets.check_url("https://10.1.2.3/h", allow_private=True)
    targets.check_url("https://169.254.169.254/h", allow_private=True)


@pytest.mark.parametrize(
    "url", ["ftp://hooks.partner.example/", "https:///path", "hooks.partner.example"]
)
def test_what_is_not_an_http_url_is_refused(url: str) -> None:
    with pytest.raises(TargetError, match="not an http"):
        targets.check_url(url, allow_private=False)


def test_delivery_connects_to_the_address_it_checked(dns: dict[str, list[str]]) -> None:
    dns["hooks.partner.example"] = [PUBLIC]
    pinned = targets.pin("https://hooks.partner.example:8443/h?x=1", allow_private=False)
    assert pinned.url == f"https://{PUBLIC}:8443/h?x=1"
    assert pinned.headers == {"Host": "hooks.partner.example:8443"}
    assert pinned.extensions == {"sni_hostname": "hooks.partner.example"}
    dns["hooks.partner.example"] = ["2606:2800:220:1:248:1893:25c8:1946"]
    pinned = targets.pin("https://hooks.partner.example/h", allow_private=False)
    assert pinned.url == "https://[2606:2800:220:1:248:1893:25c8:1946]/h"
    assert pinned.headers == {"Host": "hooks.partner.example"}


def test_delivery_is_refused_when_the_name_now_resolves_inward(dns: dict[str, list[str]]) -> None:
    dns["rebind.partner.example"] = [PUBLIC]
    targets.check_url("https://rebind.partner.example/h", allow_private=False)
    dns["rebind.partner.example"] = ["127.0.0.1"]
    with pytest.raises(TargetError, match="loopback"):
        targets.pin("https://rebind.partner.example/h", allow_private=False)


def test_redact_hides_credentials() -> None:
    assert targets.redact("https://user:s3cret@hooks.partner.example:8443/h?q=1") == (
        "https://***@hooks.partner.example:8443/h?q=1"
    )
    assert targets.redact("https://hooks.partner.example/h") == "https://hooks.partner.example/h"


def test_an_internationalised_name_goes_on_the_wire_in_idna(dns: dict[str, list[str]]) -> None:
    dns["bücher.example"] = [PUBLIC]
    pinned = targets.pin("https://bücher.example/h", allow_private=False)
    assert pinned.url == f"https://{PUBLIC}/h"
    assert pinned.headers == {"Host": "xn--bcher-kva.example"}
    assert pinned.extensions == {"sni_hostname": "xn--bcher-kva.example"}
