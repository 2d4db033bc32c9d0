"""The SSRF address policy, as pure functions over ``ipaddress`` values and an injected resolver."""

from __future__ import annotations

import socket

import pytest

from query.settings import Settings
from tasks.netguard import FetchPolicy, Refused, address_problem, check_url, host_matches, url_problem


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.5.4", "private"),
        ("192.168.0.1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused_with_their_kind(address, why):
    assert why in (address_problem(address) or "")


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address):
    assert address_problem(address) is None


def test_hosts_match_themselves_and_their_subdomains_only():
    assert host_matches("example.org", ["example.org"])
    assert host_matches("a.b.Example.ORG.", ["example.org"])
    assert host_matches("a.example.org", ["*.example.org"])
    assert not host_matches("badexample.org", ["example.org"])
    assert not host_matches("example.org.evil.net", ["example.org"])


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://example.org/" + "a" * 70_000, "longer than"),
        ("http://example.org/a\x00b", "control characters"),
        ("http://example.org/a\x7fb", "control characters"),
        ("javascript:alert(1)", "only http:// and https://"),
        ("file:///etc/passwd", "only http:// and https://"),
        ("ftp://example.org/x", "only http:// and https://"),
        ("http://[::1", "invalid URL"),
        ("http://example.org:99999/", "invalid URL"),
        ("http:///path-only", "no host"),
    ],
)
def test_unsendable_urls_are_named(url, why):
    assert why in (url_problem(url) or "")


def _resolver(table: dict[str, list[str]]):
    """A getaddrinfo stand-in: the DNS answers a test wants, in getaddrinfo's shape."""

    def resolve(host, port, type=0):  # noqa: A002 - getaddrinfo's keyword
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in table[host]]

    return resolve


def test_a_public_name_resolving_to_a_private_address_is_refused():
    resolve = _resolver({"intranet.example.com": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(Refused, match=r"intranet.example.com \(10.0.0.7\) is a private address; set "
                                      r"CORPUS_SEARCH_FETCH_ALLOW_PRIVATE=true"):
        check_url("https://intranet.example.com/wiki", FetchPolicy(), resolve)


def test_a_public_name_with_only_public_addresses_passes_and_allow_private_opens_an_intranet():
    check_url("https://example.org/", FetchPolicy(), _resolver({"example.org": ["93.184.216.34"]}))
    check_url("http://127.0.0.1/", FetchPolicy(allow_private=True), _resolver({"127.0.0.1": ["127.0.0.1"]}))
    check_url("http://wiki.corp/", FetchPolicy(allow_private=True), _resolver({"wiki.corp": ["10.0.0.7"]}))


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254", "100.100.100.200",
                                     "169.254.10.1", "fe80::1"])
def test_the_metadata_service_and_link_local_addresses_stay_refused_where_private_ones_are_allowed(address):
    """The switch meant for an intranet opened the cloud metadata address too: an indexed intranet page could
    redirect the fetcher to the machine's credentials."""
    resolve = _resolver({"meta.example": [address]})
    with pytest.raises(Refused, match="never fetched"):
        check_url("http://meta.example/latest/meta-data/", FetchPolicy(allow_private=True), resolve)


def test_host_lists_apply_before_any_dns_lookup():
    with pytest.raises(Refused, match="denied host"):
        check_url("https://a.evil.net/", FetchPolicy(denied_hosts=("evil.net",)), _resolver({}))
    with pytest.raises(Refused, match="not an allowed host"):
        check_url("https://other.org/", FetchPolicy(allowed_hosts=("example.org",)), _resolver({}))
    check_url("https://docs.example.org/", FetchPolicy(allowed_hosts=("example.org",)),
              _resolver({"docs.example.org": ["93.184.216.34"]}))


def test_host_list_settings_accept_json_and_comma_separated_env(monkeypatch):
    monkeypatch.setenv("CORPUS_SEARCH_FETCH_ALLOWED_HOSTS", '["example.org", "docs.python.org"]')
    monkeypatch.setenv("CORPUS_SEARCH_FETCH_DENIED_HOSTS", "evil.net, ads.example.org")
    settings = Settings()
    assert settings.fetch_allowed_hosts == ["example.org", "docs.python.org"]
    assert settings.fetch_denied_hosts == ["evil.net", "ads.example.org"]
    assert settings.fetch_allow_private is False and settings.follow_symlinks is False
    assert FetchPolicy.from_settings(settings).denied_hosts == ("evil.net", "ads.example.org")
