"""The domain policy of the egress proxy: `decide` and the rebinding helpers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.net.rules import (
    NetDecision,
    address_denied,
    address_listed,
    check_domain,
    decide,
    is_listed_exactly,
    normalize_host,
    parse_host,
)
from harness.policy.rules import NetworkRule, Origin

USER = Origin("user", "/home/ana/.config/harness/config.toml")


def allow(domain: str, port: int | None = None) -> NetworkRule:
    return NetworkRule(domain, True, port, USER)


def deny(domain: str, port: int | None = None) -> NetworkRule:
    return NetworkRule(domain, False, port, USER)


# -- exact names --------------------------------------------------------------------------


def test_exact_name_is_allowed_and_names_the_rule() -> None:
    rule = allow("api.example.com")
    decision = decide("api.example.com", 443, [rule])
    assert decision == NetDecision(
        True,
        rule,
        "allowed by allow rule 'api.example.com' from user (/home/ana/.config/harness/config.toml)",
    )


@pytest.mark.parametrize(
    "host",
    ["example.com", "x.api.example.com", "api.example.co", "api-example.com", "pi.example.com"],
)
def test_exact_name_matches_nothing_else(host: str) -> None:
    assert not decide(host, 443, [allow("api.example.com")]).allowed


def test_no_rule_says_which_host_and_port() -> None:
    decision = decide("evil.test", 443, [allow("good.test")])
    assert decision == NetDecision(False, None, "no rule allows evil.test:443")


def test_no_rules_at_all_allows_nothing() -> None:
    assert decide("example.com", 80, []).reason == "no rule allows example.com:80"


# -- wildcards ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["a.example.com", "a.b.example.com", "very.deep.sub.domain.example.com"]
)
def test_wildcard_matches_subdomains_at_any_depth(host: str) -> None:
    assert decide(host, 443, [allow("*.example.com")]).allowed


def test_wildcard_does_not_match_the_apex() -> None:
    decision = decide("example.com", 443, [allow("*.example.com")])
    assert not decision.allowed
    assert decision.rule is None


@pytest.mark.parametrize("host", ["badexample.com", "example.com.evil.test", "xexample.com"])
def test_wildcard_is_anchored_at_a_label(host: str) -> None:
    assert not decide(host, 443, [allow("*.example.com")]).allowed


def test_apex_and_wildcard_together_cover_both() -> None:
    rules = [allow("example.com"), allow("*.example.com")]
    assert decide("example.com", 443, rules).allowed
    assert decide("www.example.com", 443, rules).allowed


@pytest.mark.parametrize(
    "domain", ["*", "a.*.example.com", "*example.com", "**.example.com", "*.1.2.3.4"]
)
def test_malformed_wildcards_match_nothing_and_say_why(domain: str) -> None:
    assert not decide("a.example.com", 443, [allow(domain)]).allowed
    assert not decide("1.2.3.4", 443, [allow(domain)]).allowed
    with pytest.raises(ValueError):
        check_domain(domain)


# -- ports --------------------------------------------------------------------------------


def test_rule_port_limits_the_rule() -> None:
    rules = [allow("api.example.com", 443)]
    assert decide("api.example.com", 443, rules).allowed
    decision = decide("api.example.com", 80, rules)
    assert not decision.allowed
    assert decision.reason == "no rule allows api.example.com:80"


def test_rule_without_port_allows_any_port() -> None:
    rules = [allow("api.example.com")]
    assert all(decide("api.example.com", p, rules).allowed for p in (1, 80, 443, 8443, 65535))


def test_describe_shows_the_port() -> None:
    rule = deny("smtp.example.com", 25)
    decision = decide("smtp.example.com", 25, [allow("*.example.com"), rule])
    assert decision.reason.startswith("denied by deny rule 'smtp.example.com:25' from user")


def test_deny_on_one_port_leaves_other_ports() -> None:
    rules = [allow("mail.example.com"), deny("mail.example.com", 25)]
    assert not decide("mail.example.com", 25, rules).allowed
    assert decide("mail.example.com", 587, rules).allowed


# -- deny wins ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "rules"),
    [
        ("pastebin.com", [allow("pastebin.com"), deny("pastebin.com")]),
        ("pastebin.com", [deny("pastebin.com"), allow("pastebin.com")]),
        ("www.pastebin.com", [deny("*.pastebin.com"), allow("www.pastebin.com")]),
        ("www.pastebin.com", [allow("www.pastebin.com"), deny("*.pastebin.com")]),
        ("www.pastebin.com", [allow("www.pastebin.com", 443), deny("www.pastebin.com")]),
        ("www.pastebin.com", [deny("www.pastebin.com", 443), allow("*.com")]),
    ],
)
def test_deny_wins_regardless_of_order_or_specificity(host: str, rules: list[NetworkRule]) -> None:
    decision = decide(host, 443, rules)
    assert not decision.allowed
    assert decision.rule is not None
    assert not decision.rule.allow
    assert decision.reason.startswith("denied by deny rule '")


def test_deny_reason_names_rule_and_file() -> None:
    decision = decide("pastebin.com", 443, [allow("*.com"), deny("pastebin.com")])
    assert decision.reason == (
        "denied by deny rule 'pastebin.com' from user (/home/ana/.config/harness/config.toml)"
    )


def test_deny_wildcard_does_not_deny_the_apex() -> None:
    rules = [allow("example.com"), deny("*.example.com")]
    assert decide("example.com", 443, rules).allowed
    assert not decide("a.example.com", 443, rules).allowed


# -- normalisation ------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["API.Example.COM", "api.example.com.", "Api.Example.Com."])
def test_case_and_trailing_dot_do_not_matter(host: str) -> None:
    assert decide(host, 443, [allow("api.example.com")]).allowed
    assert not decide(host, 443, [allow("*"), deny("api.example.com")]).allowed


@pytest.mark.parametrize("domain", ["API.EXAMPLE.COM", "api.example.com.", "*.EXAMPLE.com."])
def test_rules_are_normalised_too(domain: str) -> None:
    assert decide("api.example.com", 443, [allow(domain)]).allowed


def test_unicode_rule_matches_the_punycode_on_the_wire() -> None:
    rules = [allow("bücher.example")]
    assert decide("xn--bcher-kva.example", 443, rules).allowed
    assert decide("XN--BCHER-KVA.EXAMPLE", 443, rules).allowed
    assert decide("Bücher.Example", 443, rules).allowed


def test_punycode_rule_matches_a_unicode_host() -> None:
    assert decide("bücher.example", 443, [allow("xn--bcher-kva.example")]).allowed


def test_unicode_wildcard_and_deny() -> None:
    rules = [allow("*.example"), deny("*.bücher.example")]
    assert not decide("www.xn--bcher-kva.example", 443, rules).allowed
    assert decide("www.example", 443, rules).allowed


def test_idna_2008_keeps_sharp_s_distinct_from_ss() -> None:
    # IDNA 2003 would map "faß" to "fass", another domain; browsers and curl do not.
    assert normalize_host("faß.de") == "xn--fa-hia.de"
    assert decide("fass.de", 443, [deny("faß.de"), allow("fass.de")]).allowed
    assert not decide("xn--fa-hia.de", 443, [deny("faß.de"), allow("*.de")]).allowed


def test_fullwidth_dots_are_label_separators() -> None:
    assert normalize_host("ｅｘａｍｐｌｅ。com") == "example.com"


def test_underscore_labels_are_names() -> None:
    assert decide("_acme.example.com", 443, [allow("*.example.com")]).allowed


@pytest.mark.parametrize(
    "host",
    [
        "",
        " example.com",
        "exa mple.com",
        "example..com",
        "example.com..",
        "-bad.example.com",
        "bad-.example.com",
        "a" * 64 + ".com",
        ".".join(["a" * 60] * 5),
        "exa%6dple.com",
        "user@example.com",
        "example.com:443",
        "[::1",
        "[fe80::1%eth0]",
        "☃.com\x00",
        "1.2.3.4.5",
        "example.123",
    ],
)
def test_invalid_hosts_are_refused_with_a_reason(host: str) -> None:
    decision = decide(host, 443, [allow("*.com"), allow("example.com")])
    assert not decision.allowed
    assert decision.rule is None
    assert "not a valid host" in decision.reason


# -- IP literals --------------------------------------------------------------------------


def test_ip_literal_needs_a_rule_naming_that_address() -> None:
    assert not decide("93.184.216.34", 80, [allow("*.example.com"), allow("example.com")]).allowed
    assert decide("93.184.216.34", 80, [allow("93.184.216.34")]).allowed
    assert not decide("93.184.216.35", 80, [allow("93.184.216.34")]).allowed


def test_ip_literal_reason_shows_the_address() -> None:
    assert decide("10.0.0.1", 22, []).reason == "no rule allows 10.0.0.1:22"
    assert decide("::1", 22, []).reason == "no rule allows [::1]:22"


@pytest.mark.parametrize("host", ["127.1", "0x7f.0.0.1", "2130706433", "0177.0.0.1", "127.0.0.1."])
def test_every_ipv4_spelling_is_the_same_literal(host: str) -> None:
    assert parse_host(host).name == "127.0.0.1"
    assert decide(host, 80, [allow("127.0.0.1")]).allowed
    assert not decide(host, 80, [allow("*.0.0.1"), allow("127.1.0.0")]).allowed


@pytest.mark.parametrize("host", ["::1", "[::1]", "[0:0:0:0:0:0:0:1]", "0::1"])
def test_ipv6_brackets_and_spellings(host: str) -> None:
    assert decide(host, 443, [allow("[::1]")]).allowed
    assert decide(host, 443, [allow("::1")]).allowed
    assert decide(host, 443, [allow("0:0::1")]).allowed


def test_ipv6_reason_uses_brackets() -> None:
    assert decide("[2001:db8::1]", 443, []).reason == "no rule allows [2001:db8::1]:443"


def test_names_never_match_addresses_and_back() -> None:
    assert not decide("localhost", 80, [allow("127.0.0.1")]).allowed
    assert not decide("127.0.0.1", 80, [allow("localhost")]).allowed


def test_deny_on_an_address_wins() -> None:
    assert not decide("10.0.0.1", 80, [allow("10.0.0.1"), deny("10.0.0.1")]).allowed


def test_ipv4_mapped_ipv6_is_not_the_ipv4_rule() -> None:
    # A different literal; the proxy also judges what the mapped address points to.
    assert not decide("::ffff:127.0.0.1", 80, [allow("127.0.0.1")]).allowed


# -- rebinding helpers --------------------------------------------------------------------


def test_is_listed_exactly_needs_a_non_wildcard_allow() -> None:
    rules = [allow("*.corp.test"), allow("db.corp.test"), allow("other.test", 8080)]
    assert is_listed_exactly("db.corp.test", rules)
    assert is_listed_exactly("DB.corp.test.", rules)
    assert is_listed_exactly("other.test", rules)
    assert not is_listed_exactly("web.corp.test", rules)
    assert not is_listed_exactly("corp.test", rules)


def test_is_listed_exactly_is_false_when_denied() -> None:
    assert not is_listed_exactly("db.corp.test", [allow("db.corp.test"), deny("db.corp.test")])
    assert not is_listed_exactly("not a host", [allow("not a host")])


def test_address_listed() -> None:
    rules = [allow("10.0.0.5"), allow("[fd00::1]", 443), deny("10.0.0.6"), allow("10.0.0.6")]
    assert address_listed("10.0.0.5", rules)
    assert address_listed("fd00::1", rules, 443)
    assert address_listed("fd00:0::1", rules)
    assert not address_listed("fd00::1", rules, 80)
    assert not address_listed("10.0.0.6", rules)
    assert not address_listed("10.0.0.7", rules)
    assert not address_listed("db.corp.test", [allow("db.corp.test")])


def test_address_denied() -> None:
    rule = deny("169.254.169.254")
    assert address_denied("169.254.169.254", [allow("*.test"), rule]) == rule
    assert address_denied("169.254.169.253", [rule]) is None
    assert address_denied("10.0.0.1", [deny("10.0.0.1", 22)], 80) is None
    assert address_denied("10.0.0.1", [deny("10.0.0.1", 22)], 22) is not None


def test_check_domain_gives_the_canonical_form() -> None:
    assert check_domain("API.Example.com.") == "api.example.com"
    assert check_domain("*.Bücher.example") == "xn--bcher-kva.example"
    assert check_domain("[::1]") == "::1"
    with pytest.raises(ValueError, match="not a valid"):
        check_domain("exa mple.com")


@given(st.text(max_size=80), st.integers(min_value=1, max_value=65535))
def test_decide_never_raises(host: str, port: int) -> None:
    decision = decide(host, port, [allow("*.example.com"), deny("x.example.com"), allow("::1")])
    assert isinstance(decision.reason, str)
    assert decision.reason
