"""Layers in, one `Settings` out, with the layer every value came from.

Precedence, highest first: cli > profile:NAME > project > user > system >
default. An untrusted project may only tighten. Managed files bound them all:
a request below their floor is refused with an error that names the managed
file and key, never silently changed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.config.options import CliOptions
from harness.config.profiles import DEFAULTS_TOML, find_profile
from harness.config.schema import ConfigFile, parse_config, parse_size
from harness.config.settings import AdminConstraints, Settings
from harness.config.trust import is_trusted
from harness.errors import ConfigError, ManagedConstraintError, UsageError
from harness.paths import Locations
from harness.policy.envpolicy import EnvPolicy, secret_name
from harness.policy.modes import (
    DEPRECATED_POLICIES,
    ApprovalPolicy,
    FilesystemAccess,
    NetworkMode,
    RuleAction,
    SandboxMode,
)
from harness.policy.plan import Limits
from harness.policy.rules import FilesystemRule, NetworkRule, Origin, PrefixRule


@dataclass(frozen=True)
class Layer:
    """One configuration file and the layer it belongs to."""

    origin: Origin
    config: ConfigFile


# -- loading -------------------------------------------------------------------------


def resolve(options: CliOptions, locations: Locations, *, cwd: Path | None = None) -> Settings:
    """Load every layer for `options` and resolve them into Settings."""
    workspace = _workspace(options.workspace, cwd)
    managed, managed_layers = load_managed(locations)
    trusted = is_trusted(workspace, locations.trust_file)
    layers: list[Layer] = [
        Layer(Origin("default"), parse_config(DEFAULTS_TOML, "built-in defaults"))
    ]
    for origin, path in (
        (Origin("system", str(locations.system_config)), locations.system_config),
        (Origin("user", str(locations.user_config)), locations.user_config),
        (
            Origin("project", str(Locations.project_config(workspace))),
            Locations.project_config(workspace),
        ),
    ):
        config = _load_optional(path)
        if config is not None:
            _refuse_admin_section(config, path)
            layers.append(Layer(origin, config))
    if options.profile:
        profile = find_profile(options.profile, locations.config_home)
        source = str(profile.path) if profile.path else f"built-in profile {profile.name}"
        config = parse_config(profile.text, source)
        _refuse_admin_section(config, Path(source))
        layers.append(
            Layer(
                Origin(f"profile:{profile.name}", str(profile.path) if profile.path else None),
                config,
            )
        )
    layers.append(_cli_layer(options))
    layers.extend(managed_layers)
    return resolve_layers(
        layers, managed, workspace, locations, project_trusted=trusted, profile=options.profile
    )


def _workspace(requested: Path | None, cwd: Path | None) -> Path:
    base = cwd or Path.cwd()
    path = (
        (base / requested)
        if requested is not None and not requested.is_absolute()
        else (requested or base)
    )
    if not path.exists():
        raise ConfigError(
            f"workspace {path} does not exist; pass an existing directory to --workspace/-w.",
            key="--workspace",
        )
    if not path.is_dir():
        raise ConfigError(
            f"workspace {path} is not a directory; pass a directory to --workspace/-w.",
            key="--workspace",
        )
    return path.resolve()


def _load_optional(path: Path) -> ConfigFile | None:
    from harness.config.schema import load_config

    try:
        exists = path.is_file()
    except OSError:
        exists = False
    return load_config(path) if exists else None


def _refuse_admin_section(config: ConfigFile, path: Path) -> None:
    if config.admin != type(config.admin)():
        raise ConfigError(
            f"{path}: `[admin]` is honoured only in /etc/harness/managed.toml; "
            "move it there (as root) or remove it.",
            path=str(path),
            key="admin",
        )


def load_managed(locations: Locations) -> tuple[AdminConstraints, list[Layer]]:
    """Both managed files apply; where they differ, the stricter wins.

    Returns the constraints and the files as layers (their forced rules join the others).
    """
    paths = [locations.managed_config]
    if locations.extra_managed is not None:
        if not locations.extra_managed.is_file():
            raise ConfigError(
                f"HARNESS_MANAGED_CONFIG names {locations.extra_managed}, which does not exist; "
                "point it at a managed TOML file or unset it.",
                path=str(locations.extra_managed),
            )
        paths.append(locations.extra_managed)
    constraints = AdminConstraints()
    layers: list[Layer] = []
    for path in paths:
        config = _load_optional(path)
        if config is None:
            continue
        layers.append(Layer(Origin("managed", str(path)), config))
        constraints = _merge_managed(constraints, config, path)
    files = tuple(Path(layer.origin.path or "") for layer in layers)
    return replace(constraints, files=files), layers


_MANAGED_SECTIONS = ("admin", "prefix_rules", "network", "filesystem")


def _merge_managed(current: AdminConstraints, config: ConfigFile, path: Path) -> AdminConstraints:
    origin = Origin("managed", str(path))
    for name in ConfigFile.model_fields:
        if (
            name not in _MANAGED_SECTIONS
            and getattr(config, name) != ConfigFile.model_fields[name].default
        ):
            raise ConfigError(
                f"{path}: `[{name}]` has no meaning in a managed file, which sets a floor rather than values; "
                "use `[admin] min_sandbox`, `disallow_policies`, `audit_required`, `audit_path`, or forced "
                "`[[prefix_rules]]` (prompt or forbidden), `[[network]]` (allow = false) and "
                '`[[filesystem]]` (access = "none").',
                path=str(path),
                key=name,
            )
    for index, rule in enumerate(config.prefix_rules):
        if rule.action == "allow":
            raise ConfigError(
                f'{path}: `prefix_rules[{index}]` (pattern {rule.pattern!r}) has action "allow"; a managed '
                'file can only force "prompt" or "forbidden".',
                path=str(path),
                key=f"prefix_rules[{index}].action",
            )
    for index, entry in enumerate(config.network):
        if entry.allow:
            raise ConfigError(
                f"{path}: `network[{index}]` ({entry.domain}) allows a domain; a managed file can only deny "
                "(allow = false).",
                path=str(path),
                key=f"network[{index}].allow",
            )
    for index, fs_entry in enumerate(config.filesystem):
        if fs_entry.access != "none":
            raise ConfigError(
                f"{path}: `filesystem[{index}]` ({fs_entry.path}) grants access; a managed file can only "
                'hide paths (access = "none").',
                path=str(path),
                key=f"filesystem[{index}].access",
            )
    admin = config.admin
    min_sandbox, min_origin = current.min_sandbox, current.min_sandbox_origin
    if admin.min_sandbox is not None:
        mode = SandboxMode.parse(admin.min_sandbox)
        if min_sandbox is None or mode.is_stricter_than(min_sandbox):
            min_sandbox, min_origin = mode, origin
    disallowed = dict(current.disallowed_policies)
    for name in admin.disallow_policies or []:
        policy = _policy(name)
        disallowed.setdefault(policy, origin)
    required = current.audit_required or (origin if admin.audit_required else None)
    audit_paths = current.audit_paths
    if admin.audit_path:
        audit_paths = (*audit_paths, (Path(admin.audit_path), origin))
    max_network, max_network_origin = current.max_network, current.max_network_origin
    if admin.max_network is not None:
        ceiling = NetworkMode.parse(admin.max_network)
        if max_network is None or ceiling.is_stricter_than(max_network):
            max_network, max_network_origin = ceiling, origin
    return AdminConstraints(
        min_sandbox,
        min_origin,
        disallowed,
        required,
        audit_paths,
        max_network=max_network,
        max_network_origin=max_network_origin,
    )


def _policy(name: str) -> ApprovalPolicy:
    return DEPRECATED_POLICIES.get(name) or ApprovalPolicy.parse(name)


def _cli_layer(options: CliOptions) -> Layer:
    """Flags as a config layer; shortcuts expand here so provenance says which flag it was."""
    if options.yolo and options.full_auto:
        raise UsageError("--yolo and --full-auto contradict each other; choose one.")
    if options.yolo and (options.approval or options.sandbox):
        raise UsageError(
            "--yolo sets --approval never and --sandbox danger-full-access; drop the other flag."
        )
    if options.full_auto and (options.approval or options.sandbox):
        raise UsageError(
            "--full-auto sets --approval on-request and --sandbox workspace-write; drop the other flag."
        )
    approval: dict[str, Any] = {}
    sandbox: dict[str, Any] = {}
    label = "cli"
    if options.full_auto:
        approval["policy"], sandbox["mode"] = "on-request", "workspace-write"
        label = "--full-auto"
    if options.yolo:
        approval["policy"], sandbox["mode"] = "never", "danger-full-access"
        sandbox["backend"] = options.backend or "vm"
        label = "--yolo"
    if options.approval:
        approval["policy"] = options.approval
    if options.sandbox:
        sandbox["mode"] = options.sandbox
    if options.backend:
        sandbox["backend"] = options.backend
    if options.image:
        sandbox["image"] = options.image
    if options.network:
        sandbox["network"] = options.network
    network = [{"domain": d, "allow": True} for d in options.allow_domains]
    network += [{"domain": d, "allow": False} for d in options.deny_domains]
    data: dict[str, Any] = {"approval": approval, "sandbox": sandbox, "network": network}
    from harness.config.schema import validate_config

    try:
        config = validate_config(data, "the command line")
    except ConfigError as exc:
        raise UsageError(
            exc.message.replace("`approval.policy`", "--approval")
            .replace("`sandbox.mode`", "--sandbox")
            .replace("`sandbox.backend`", "--backend")
            .replace("`sandbox.network`", "--network")
            .replace("Fix the file; nothing was run.", "Fix the option; nothing was run.")
        ) from None
    return Layer(Origin("cli", label if label != "cli" else None), config)


# -- resolution ----------------------------------------------------------------------

# How to compare an untrusted project's value with what the layers below give:
# True when the project's value is at least as strict (and so may apply).
_Tightens = Callable[[Any, Any], bool]


def _stricter_enum(parse: Callable[[str], Any]) -> _Tightens:
    return lambda new, old: old is None or parse(new).strictness >= parse(old).strictness


_SCALARS: dict[str, _Tightens | None] = {
    "approval.policy": _stricter_enum(_policy),
    "sandbox.mode": _stricter_enum(SandboxMode.parse),
    "sandbox.network": _stricter_enum(NetworkMode.parse),
    "sandbox.network_access": lambda new, old: new is False,
    "sandbox.backend": None,
    "sandbox.image": None,
    "features.smart_approvals": None,
    "limits.pids": lambda new, old: old is None or new <= old,
    "limits.memory": lambda new, old: old is None or parse_size(new) <= parse_size(old),
    "limits.cpus": lambda new, old: old is None or new <= old,
    "guardian.command": None,  # runs on the host: never from an untrusted project
    "guardian.timeout": None,
    "audit.enabled": lambda new, old: new is True,
    "audit.path": None,
}


def _get(config: ConfigFile, dotted: str) -> Any:
    section, key = dotted.split(".")
    return getattr(getattr(config, section), key)


def resolve_layers(
    layers: Sequence[Layer],
    managed: AdminConstraints,
    workspace: Path,
    locations: Locations,
    *,
    project_trusted: bool,
    profile: str | None = None,
) -> Settings:
    values: dict[str, Any] = {}
    sources: dict[str, Origin] = {}
    notices: list[str] = []
    ignored: list[str] = []
    for layer in layers:
        untrusted = layer.origin.layer == "project" and not project_trusted
        for key, tightens in _SCALARS.items():
            value = _get(layer.config, key)
            if value is None:
                continue
            if untrusted and (tightens is None or not tightens(value, values.get(key))):
                ignored.append(f"{key} = {value!r}")
                continue
            values[key] = value
            sources[key] = layer.origin

    lists = _merge_lists(layers, project_trusted, ignored)
    if ignored:
        notices.append(
            f"{Locations.project_config(workspace)} was only allowed to tighten settings, because "
            f"{workspace} is not trusted; ignored: {', '.join(ignored)}. "
            f"Run `harness trust {workspace}` if you trust this repository's configuration."
        )

    policy_value = values["approval.policy"]
    if policy_value in DEPRECATED_POLICIES:
        mapped = DEPRECATED_POLICIES[policy_value]
        notices.append(
            f"approval policy `{policy_value}` (from {sources['approval.policy']}) is deprecated; "
            f"using `{mapped.value}`, which asks after a sandbox denial. Change it to `{mapped.value}`."
        )
    policy = _policy(policy_value)
    mode = SandboxMode.parse(values["sandbox.mode"])
    policy, mode = _enforce_floor(policy, mode, sources, managed)
    if managed.min_sandbox is not None and sources["sandbox.mode"].layer == "managed":
        values["sandbox.mode"] = mode.value
    if sources["approval.policy"].layer == "managed":
        values["approval.policy"] = policy.value

    network_rules = tuple(lists.network)
    _enforce_managed_rules(lists.prefix_rules, network_rules)
    network_mode = _enforce_network_ceiling(
        _network_mode(values, mode, network_rules, sources), sources, managed
    )

    audit_enabled = bool(values.get("audit.enabled", True))
    if managed.audit_required is not None:
        if not audit_enabled:
            where = sources["audit.enabled"]
            raise ManagedConstraintError(
                f"{managed.audit_required.path}: `[admin] audit_required = true` forbids "
                f"`audit.enabled = false` (set in {where}); remove that setting.",
                path=managed.audit_required.path,
                key="admin.audit_required",
            )
        sources["audit.enabled"] = managed.audit_required
    # An admin's path always gets every record; the user's own log (or the default) too.
    audit_list = [p for p, _ in managed.audit_paths]
    own = Path(values["audit.path"]).expanduser() if values.get("audit.path") else None
    if own is None and not audit_list:
        own = locations.default_audit_log
        sources["audit.path"] = Origin("default")
    if own is not None and own not in audit_list:
        audit_list.append(own)
    if managed.audit_paths:
        sources["audit.path"] = managed.audit_paths[0][1]
    audit_paths = tuple(audit_list) if audit_enabled else ()

    env = _env_policy(layers, project_trusted)
    cpus = values.get("limits.cpus") or float(os.cpu_count() or 1)
    if "limits.cpus" not in sources:
        sources["limits.cpus"] = Origin("default")
    limits = Limits(
        pids=int(values["limits.pids"]),
        memory_bytes=parse_size(values["limits.memory"]),
        cpus=float(cpus),
    )
    guardian = values.get("guardian.command")
    flat_sources = {key: origin.layer for key, origin in sources.items()}
    flat_sources["sandbox.network"] = sources.get("sandbox.network", sources["sandbox.mode"]).layer
    for key in (
        "filesystem",
        "network",
        "prefix_rules",
        "env.pass",
        "env.set",
        "sandbox.protected_paths",
    ):
        flat_sources[key] = lists.sources.get(key, "default")
    return Settings(
        workspace=workspace,
        approval_policy=policy,
        sandbox_mode=mode,
        backend=values["sandbox.backend"],
        image=values.get("sandbox.image"),
        network_mode=network_mode,
        smart_approvals=bool(values["features.smart_approvals"]),
        protected_paths=tuple(lists.protected),
        filesystem=tuple(lists.filesystem),
        network_rules=network_rules,
        prefix_rules=tuple(lists.prefix_rules),
        limits=limits,
        env=env,
        guardian_command=tuple(guardian) if guardian else None,
        guardian_timeout=float(values["guardian.timeout"]),
        audit_enabled=audit_enabled,
        audit_paths=audit_paths,
        admin=managed,
        profile=profile,
        project_trusted=project_trusted,
        sources=flat_sources,
        notices=tuple(notices),
    )


def _enforce_floor(
    policy: ApprovalPolicy, mode: SandboxMode, sources: dict[str, Origin], managed: AdminConstraints
) -> tuple[ApprovalPolicy, SandboxMode]:
    floor = managed.min_sandbox
    if floor is not None and floor.is_stricter_than(mode):
        origin = sources["sandbox.mode"]
        if origin.layer != "default":
            requested_by = _describe_origin(origin)
            raise ManagedConstraintError(
                f"{managed.min_sandbox_origin and managed.min_sandbox_origin.path}: `[admin] min_sandbox = "
                f'"{floor.value}"` forbids sandbox mode `{mode.value}` (requested by {requested_by}). '
                f"Choose a mode at least as strict as `{floor.value}`.",
                path=managed.min_sandbox_origin.path if managed.min_sandbox_origin else None,
                key="admin.min_sandbox",
            )
        mode = floor
        sources["sandbox.mode"] = managed.min_sandbox_origin or Origin("managed")
    if policy in managed.disallowed_policies:
        origin = sources["approval.policy"]
        managed_origin = managed.disallowed_policies[policy]
        allowed = [p.value for p in ApprovalPolicy if p not in managed.disallowed_policies]
        if origin.layer != "default" or not allowed:
            raise ManagedConstraintError(
                f"{managed_origin.path}: `[admin] disallow_policies` forbids approval policy "
                f"`{policy.value}` (requested by {_describe_origin(origin)}). "
                f"Allowed policies: {', '.join(allowed) or 'none'}.",
                path=managed_origin.path,
                key="admin.disallow_policies",
            )
        policy = ApprovalPolicy.parse(allowed[0])
        sources["approval.policy"] = managed_origin
    return policy, mode


def _enforce_network_ceiling(
    network: NetworkMode, sources: dict[str, Origin], managed: AdminConstraints
) -> NetworkMode:
    """`[admin] max_network` bounds every layer; a request above it is refused, a default lowered."""
    ceiling = managed.max_network
    if ceiling is None or not ceiling.is_stricter_than(network):
        return network
    origin = sources.get("sandbox.network")
    if origin is None or origin.layer == "default":
        # not asked for: full network only followed from the mode (danger-full-access)
        sources["sandbox.network"] = managed.max_network_origin or Origin("managed")
        return ceiling
    path = managed.max_network_origin.path if managed.max_network_origin else None
    raise ManagedConstraintError(
        f'{path}: `[admin] max_network = "{ceiling.value}"` forbids network `{network.value}` '
        f"(requested by {_describe_origin(origin)}). Use --network {ceiling.value}"
        + (" or stricter." if ceiling is not NetworkMode.NONE else "."),
        path=path,
        key="admin.max_network",
    )


def _describe_origin(origin: Origin) -> str:
    if origin.layer == "cli":
        return f"the command line ({origin.path})" if origin.path else "the command line"
    if origin.path:
        return f"{origin.layer} ({origin.path})"
    return origin.layer


@dataclass
class _Lists:
    """The list settings, merged across layers, with the layer of each entry."""

    filesystem: list[FilesystemRule] = field(default_factory=list)
    network: list[NetworkRule] = field(default_factory=list)
    prefix_rules: list[PrefixRule] = field(default_factory=list)
    protected: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)


def _merge_lists(layers: Sequence[Layer], project_trusted: bool, ignored: list[str]) -> _Lists:
    """List sections add up across layers; an untrusted project adds only restrictions."""
    merged = _Lists()

    def note(key: str, origin: Origin) -> None:
        previous = merged.sources.get(key)
        merged.sources[key] = origin.layer if previous in (None, origin.layer) else "multiple"

    for layer in layers:
        origin = layer.origin
        untrusted = origin.layer == "project" and not project_trusted
        config = layer.config
        for fs in config.filesystem:
            if untrusted and fs.access != "none":
                ignored.append(f"filesystem {fs.path} ({fs.access})")
                continue
            merged.filesystem.append(
                FilesystemRule(fs.path, FilesystemAccess.parse(fs.access), origin)
            )
            note("filesystem", origin)
        for net in config.network:
            if untrusted and net.allow:
                ignored.append(f"network allow {net.domain}")
                continue
            merged.network.append(NetworkRule(net.domain, net.allow, net.port, origin))
            note("network", origin)
        for rule in config.prefix_rules:
            if untrusted and rule.action == "allow":
                ignored.append(f"prefix rule allow {rule.pattern!r}")
                continue
            merged.prefix_rules.append(
                PrefixRule(rule.pattern, RuleAction.parse(rule.action), origin, rule.justification)
            )
            note("prefix_rules", origin)
        for path in config.sandbox.protected_paths or []:
            merged.protected.append(path)
            note("sandbox.protected_paths", origin)
        if untrusted and (config.env.pass_ or config.env.set):
            ignored.append("env")
        elif config.env.pass_ or config.env.set:
            note("env.pass" if config.env.pass_ else "env.set", origin)
    return merged


def _enforce_managed_rules(rules: Sequence[PrefixRule], network: Sequence[NetworkRule]) -> None:
    """A rule below the managed layer may not allow what a managed rule denies."""
    from harness.approval.rules import Match, deny_match
    from harness.approval.shell import parse_argv

    managed = [r for r in rules if r.is_managed]
    for rule in rules:
        if rule.action is not RuleAction.ALLOW:
            continue
        for command in parse_argv(rule.tokens, "/").commands:
            for admin_rule in managed:
                if deny_match(admin_rule.tokens, command) is not Match.NO:
                    raise ManagedConstraintError(
                        f"{admin_rule.origin.path}: `[[prefix_rules]] pattern = {admin_rule.pattern!r}, "
                        f'action = "{admin_rule.action.value}"` cannot be overridden, but '
                        f"{rule.origin} allows {rule.pattern!r}. Remove that allow rule.",
                        path=admin_rule.origin.path,
                        key="prefix_rules",
                    )
    denied = {r.domain: r for r in network if r.origin.layer == "managed" and not r.allow}
    for entry in network:
        if entry.allow and entry.domain in denied:
            admin_entry = denied[entry.domain]
            raise ManagedConstraintError(
                f"{admin_entry.origin.path}: `[[network]] domain = {admin_entry.domain!r}, allow = false` "
                f"cannot be overridden, but {entry.origin} allows it. Remove that allow entry.",
                path=admin_entry.origin.path,
                key="network",
            )


def _network_mode(
    values: dict[str, Any],
    mode: SandboxMode,
    rules: Sequence[NetworkRule],
    sources: dict[str, Origin],
) -> NetworkMode:
    explicit = values.get("sandbox.network")
    if explicit is not None:
        return NetworkMode.parse(explicit)
    if mode is SandboxMode.DANGER_FULL_ACCESS:
        return NetworkMode.FULL
    if values.get("sandbox.network_access"):
        sources["sandbox.network"] = sources["sandbox.network_access"]
        return NetworkMode.FULL
    if any(r.allow for r in rules):
        sources["sandbox.network"] = next(r.origin for r in rules if r.allow)
        return NetworkMode.ALLOWLIST
    return NetworkMode.NONE


def _env_policy(layers: Sequence[Layer], project_trusted: bool) -> EnvPolicy:
    passthrough: set[str] = set()
    fixed: dict[str, str] = {}
    for layer in layers:
        if layer.origin.layer == "project" and not project_trusted:
            continue
        where = layer.origin.path or layer.origin.layer
        for name in layer.config.env.pass_ or []:
            if secret_name(name):
                raise ConfigError(
                    f"{where}: `env.pass` names {name}, which looks like a secret "
                    "(*KEY*, *TOKEN*, *SECRET*, *PASSWORD*, *CREDENTIAL*); secrets never enter the sandbox. "
                    "Remove it.",
                    path=layer.origin.path,
                    key="env.pass",
                )
            passthrough.add(name)
        for name, value in (layer.config.env.set or {}).items():
            if secret_name(name):
                raise ConfigError(
                    f"{where}: `env.set` sets {name}, which looks like a secret; secrets never enter the "
                    "sandbox. Remove it.",
                    path=layer.origin.path,
                    key="env.set",
                )
            fixed[name] = value
    return EnvPolicy(passthrough=frozenset(passthrough), fixed=dict(sorted(fixed.items())))
