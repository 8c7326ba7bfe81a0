"""Which hosts the egress proxy lets a sandbox reach: a pure function of `[[network]]` rules.

A rule's `domain` is one of:

- an exact name, `api.example.com`: matches that name only;
- a wildcard, `*.example.com`: matches every name *below* `example.com`, at any depth
  (`a.example.com`, `a.b.example.com`), but **not** `example.com` itself; list the
  apex separately when it is wanted. `*` may only stand as the whole first label;
- an IP address, `203.0.113.7`, `2001:db8::1` or `[2001:db8::1]`: matches a request
  naming that exact address, and (see `address_listed`) a name resolving to it.
  Names and wildcards never match an IP literal, and an address rule never matches
  a name.

A rule may carry a port (`None` means any port). Names compare case-insensitively,
one trailing dot is ignored, and internationalised names are compared in their
IDNA 2008 / UTS 46 (non-transitional) ASCII form, the `xn--` form that curl and
browsers put on the wire. A rule whose domain cannot be read (`check_domain` says
why) never matches anything.

A deny rule wins over every allow rule, whatever the order or how specific each is.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import idna

from harness.policy.rules import NetworkRule

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_MAX_NAME = 253
_MAX_LABEL = 63
_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_HEX_CHARS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class NetDecision:
    """What the rules say about one host and port.

    Attributes:
        allowed: True only when an allow rule matches and no deny rule does.
        rule: the rule that decided, or None when none matched.
        reason: one line for a 403 body and the audit log, naming the rule.
    """

    allowed: bool
    rule: NetworkRule | None
    reason: str


@dataclass(frozen=True)
class Host:
    """A host in canonical form.

    Attributes:
        name: lowercase ASCII name without a trailing dot, or the compressed text of
            the address (IPv6 without brackets).
        ip: the address when the host is an IP literal, else None.
    """

    name: str
    ip: IPAddress | None = None

    @property
    def display(self) -> str:
        """The host as it goes before `:port` (IPv6 in brackets)."""
        return f"[{self.name}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.name


@lru_cache(maxsize=4096)
def parse_host(host: str) -> Host:
    """The canonical form of a host a client named.

    IPv4 in every form `inet_aton` accepts (`127.1`, `0x7f.0.0.1`, `2130706433`) is
    an IP literal, as it would be to the resolver and to browsers; so is a bracketed
    or bare IPv6 address. Everything else must be a DNS name.

    Raises:
        ValueError: the host is empty, too long, or not a valid name or address.
    """
    text = host.strip()
    if text != host or not text:
        raise ValueError("empty host or surrounding whitespace")
    if text.startswith("["):
        if not text.endswith("]"):
            raise ValueError("unbalanced brackets")
        return Host(*_ipv6(text[1:-1]))
    if ":" in text:
        return Host(*_ipv6(text))
    if text.endswith("."):
        text = text[:-1]
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"not a valid internationalised name ({exc})") from exc
    text = text.lower()
    ip = _ipv4_literal(text)
    if ip is not None:
        return Host(str(ip), ip)
    _check_name(text)
    return Host(text)


def normalize_host(host: str) -> str:
    """`parse_host(host).name`: the text rules and resolvers compare."""
    return parse_host(host).name


def check_domain(domain: str) -> str:
    """The canonical form of a rule's `domain`, for validating configuration.

    Returns the lowercase ASCII name (`*.` kept for wildcards) or address text.

    Raises:
        ValueError: saying what is wrong with it.
    """
    pattern = _compile(domain)
    if isinstance(pattern, str):
        raise ValueError(pattern)
    return pattern.text


def decide(host: str, port: int, rules: Sequence[NetworkRule]) -> NetDecision:
    """Whether the rules let a sandbox reach `host:port`, and which rule says so."""
    try:
        target = parse_host(host)
    except ValueError as exc:
        return NetDecision(False, None, f"{host!r} is not a valid host name or address: {exc}")
    matching = [rule for rule in rules if _matches(rule, target, port)]
    for rule in matching:
        if not rule.allow:
            return NetDecision(False, rule, f"denied by {rule.describe()}")
    if matching:
        return NetDecision(True, matching[0], f"allowed by {matching[0].describe()}")
    return NetDecision(False, None, f"no rule allows {target.display}:{port}")


def is_listed_exactly(host: str, rules: Sequence[NetworkRule]) -> bool:
    """Whether an allow rule names exactly this host (a wildcard is not enough).

    The port is not considered here: `decide` has already checked it. A host that
    a deny rule names is never listed.
    """
    try:
        target = parse_host(host)
    except ValueError:
        return False
    exact = False
    for rule in rules:
        pattern = _compile(rule.domain)
        if isinstance(pattern, str) or pattern.wildcard or pattern.text != target.name:
            continue
        if not rule.allow:
            return False
        exact = True
    return exact


def address_listed(ip: str, rules: Sequence[NetworkRule], port: int | None = None) -> bool:
    """Whether an allow rule names this exact address and no deny rule does.

    With `port`, only rules for that port (or for any port) count.
    """
    denied = address_denied(ip, rules, port)
    if denied is not None:
        return False
    address = _any_ip(ip)
    if address is None:
        return False
    return any(
        rule.allow and (port is None or rule.port in (None, port)) and _names_ip(rule, address)
        for rule in rules
    )


def address_denied(
    ip: str, rules: Sequence[NetworkRule], port: int | None = None
) -> NetworkRule | None:
    """The first deny rule naming this exact address (for `port`, when given), if any."""
    address = _any_ip(ip)
    if address is None:
        return None
    for rule in rules:
        if rule.allow or (port is not None and rule.port not in (None, port)):
            continue
        if _names_ip(rule, address):
            return rule
    return None


@dataclass(frozen=True)
class _Pattern:
    """A rule's domain: an exact name, a `*.` wildcard, or an IP address."""

    text: str
    wildcard: bool = False
    ip: IPAddress | None = None


def _matches(rule: NetworkRule, target: Host, port: int) -> bool:
    if rule.port is not None and rule.port != port:
        return False
    pattern = _compile(rule.domain)
    if isinstance(pattern, str):
        return False
    if target.ip is not None or pattern.ip is not None:
        return pattern.ip is not None and pattern.ip == target.ip
    if pattern.wildcard:
        return target.name.endswith("." + pattern.text)
    return target.name == pattern.text


def _names_ip(rule: NetworkRule, address: IPAddress) -> bool:
    pattern = _compile(rule.domain)
    return not isinstance(pattern, str) and pattern.ip is not None and pattern.ip == address


@lru_cache(maxsize=4096)
def _compile(domain: str) -> _Pattern | str:
    """The rule's pattern, or a string saying why the domain cannot be read."""
    text = domain.strip()
    if text.startswith("*."):
        try:
            suffix = parse_host(text[2:])
        except ValueError as exc:
            return f"{domain!r} is not a valid wildcard: {exc}"
        if suffix.ip is not None:
            return f"{domain!r} is not a valid wildcard: addresses have no subdomains"
        return _Pattern(suffix.name, wildcard=True)
    if "*" in text:
        return f"{domain!r}: '*' may only stand as the whole first label, as in '*.example.com'"
    try:
        host = parse_host(text)
    except ValueError as exc:
        return f"{domain!r} is not a valid domain or address: {exc}"
    return _Pattern(host.name, ip=host.ip)


def _ipv6(text: str) -> tuple[str, IPAddress]:
    if "%" in text:
        raise ValueError("IPv6 zone identifiers are not accepted")
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError as exc:
        raise ValueError(f"not a valid IPv6 address ({exc})") from exc
    return str(address), address


def _ipv4_literal(text: str) -> ipaddress.IPv4Address | None:
    """An IPv4 address in any form the C resolver would take as one, else None.

    Like the WHATWG URL parser, a name whose last label is a number is an address
    (or invalid): `inet_aton` decides which forms count.
    """
    last = text.rsplit(".", 1)[-1]
    numeric = last.isdigit() or (last.startswith("0x") and all(c in _HEX_CHARS for c in last[2:]))
    if not numeric:
        return None
    if not all(c.isdigit() or c in "x." or c in _HEX_CHARS for c in text):
        raise ValueError("a name whose last label is a number must be an IPv4 address")
    try:
        packed = socket.inet_aton(text)
    except OSError as exc:
        raise ValueError("not a valid IPv4 address") from exc
    return ipaddress.IPv4Address(packed)


def _check_name(text: str) -> None:
    if len(text) > _MAX_NAME:
        raise ValueError(f"longer than {_MAX_NAME} characters")
    for label in text.split("."):
        if not label:
            raise ValueError("empty label")
        if len(label) > _MAX_LABEL:
            raise ValueError(f"a label is longer than {_MAX_LABEL} characters")
        if not set(label) <= _LABEL_CHARS:
            raise ValueError(f"label {label!r} has characters a host name cannot have")
        if label.startswith("-") or label.endswith("-"):
            raise ValueError(f"label {label!r} starts or ends with '-'")


def _any_ip(text: str) -> IPAddress | None:
    try:
        host = parse_host(text)
    except ValueError:
        return None
    return host.ip
