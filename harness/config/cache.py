"""A cache of resolved configurations, so that `run` and `up` need not load pydantic.

Validating the TOML layers with pydantic costs ~150-200 ms per invocation, as
much as half of what `docker run` itself takes here. A successful resolution
is stored under a key made of everything it read: the options, the working
directory, the environment variables that locate files, and the exact bytes
of every file that could take part (system, user, project, profile, managed
and trust files). Change any byte and the key changes. Failures are never
cached: they are resolved, and reported, every time.

The cache lives in the user's own state directory; someone who can write there
can also edit the user's configuration, so it adds no new way around the
managed floor for others.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from harness.config.options import CliOptions
from harness.config.settings import AdminConstraints, Settings
from harness.paths import Locations
from harness.policy.envpolicy import EnvPolicy
from harness.policy.modes import (
    ApprovalPolicy,
    FilesystemAccess,
    NetworkMode,
    RuleAction,
    SandboxMode,
)
from harness.policy.plan import Limits
from harness.policy.rules import FilesystemRule, NetworkRule, Origin, PrefixRule

FORMAT = 1
KEEP = 64  # cached resolutions kept per user
_ENVIRONMENT = ("HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "HARNESS_MANAGED_CONFIG")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return b"\0absent"
    except OSError as exc:
        return f"\0unreadable {exc.errno}".encode()


def cache_key(options: CliOptions, locations: Locations, cwd: Path) -> str:
    """Everything a resolution depends on, hashed."""
    workspace = (cwd / options.workspace) if options.workspace is not None else cwd
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(label.encode() + b"\0" + len(data).to_bytes(8, "big") + data)

    add("format", str(FORMAT).encode())
    add("harness", Path(__file__).read_bytes())  # a new version of this module invalidates all
    add("options", repr(options).encode())
    add("cwd", str(cwd).encode())
    add("cpus", str(os.cpu_count()).encode())
    for name in _ENVIRONMENT:
        add(name, os.environ.get(name, "\0unset").encode())
    files = [
        locations.system_config,
        locations.user_config,
        locations.managed_config,
        locations.trust_file,
        Locations.project_config(workspace),
    ]
    if locations.extra_managed is not None:
        files.append(locations.extra_managed)
    if options.profile:
        files.append(locations.config_home / "harness" / "profiles" / f"{options.profile}.toml")
    for path in files:
        add(str(path), _read(path))
    return digest.hexdigest()


def _origin(data: list[Any] | None) -> Origin | None:
    return None if data is None else Origin(data[0], data[1])


def _origin_json(origin: Origin | None) -> list[str | None] | None:
    return None if origin is None else [origin.layer, origin.path]


def settings_to_json(settings: Settings) -> dict[str, Any]:
    admin = settings.admin
    return {
        "workspace": str(settings.workspace),
        "approval_policy": settings.approval_policy.value,
        "sandbox_mode": settings.sandbox_mode.value,
        "backend": settings.backend,
        "image": settings.image,
        "network_mode": settings.network_mode.value,
        "smart_approvals": settings.smart_approvals,
        "protected_paths": list(settings.protected_paths),
        "filesystem": [
            [r.path, r.access.value, _origin_json(r.origin)] for r in settings.filesystem
        ],
        "network_rules": [
            [r.domain, r.allow, r.port, _origin_json(r.origin)] for r in settings.network_rules
        ],
        "prefix_rules": [
            [r.pattern, r.action.value, _origin_json(r.origin), r.justification]
            for r in settings.prefix_rules
        ],
        "limits": [settings.limits.pids, settings.limits.memory_bytes, settings.limits.cpus],
        "env": [sorted(settings.env.passthrough), dict(settings.env.fixed)],
        "guardian_command": list(settings.guardian_command) if settings.guardian_command else None,
        "guardian_timeout": settings.guardian_timeout,
        "audit_enabled": settings.audit_enabled,
        "audit_paths": [str(p) for p in settings.audit_paths],
        "admin": {
            "min_sandbox": admin.min_sandbox.value if admin.min_sandbox else None,
            "min_sandbox_origin": _origin_json(admin.min_sandbox_origin),
            "disallowed_policies": [
                [p.value, _origin_json(o)] for p, o in admin.disallowed_policies.items()
            ],
            "audit_required": _origin_json(admin.audit_required),
            "audit_paths": [[str(p), _origin_json(o)] for p, o in admin.audit_paths],
            "files": [str(p) for p in admin.files],
            "max_network": admin.max_network.value if admin.max_network else None,
            "max_network_origin": _origin_json(admin.max_network_origin),
        },
        "profile": settings.profile,
        "project_trusted": settings.project_trusted,
        "sources": dict(settings.sources),
        "notices": list(settings.notices),
    }


def settings_from_json(data: dict[str, Any]) -> Settings:
    admin = data["admin"]
    return Settings(
        workspace=Path(data["workspace"]),
        approval_policy=ApprovalPolicy.parse(data["approval_policy"]),
        sandbox_mode=SandboxMode.parse(data["sandbox_mode"]),
        backend=data["backend"],
        image=data["image"],
        network_mode=NetworkMode.parse(data["network_mode"]),
        smart_approvals=bool(data["smart_approvals"]),
        protected_paths=tuple(data["protected_paths"]),
        filesystem=tuple(
            FilesystemRule(p, FilesystemAccess.parse(a), _origin(o) or Origin("default"))
            for p, a, o in data["filesystem"]
        ),
        network_rules=tuple(
            NetworkRule(d, bool(a), p, _origin(o) or Origin("default"))
            for d, a, p, o in data["network_rules"]
        ),
        prefix_rules=tuple(
            PrefixRule(p, RuleAction.parse(a), _origin(o) or Origin("default"), j)
            for p, a, o, j in data["prefix_rules"]
        ),
        limits=Limits(int(data["limits"][0]), int(data["limits"][1]), float(data["limits"][2])),
        env=EnvPolicy(frozenset(data["env"][0]), dict(data["env"][1])),
        guardian_command=tuple(data["guardian_command"]) if data["guardian_command"] else None,
        guardian_timeout=float(data["guardian_timeout"]),
        audit_enabled=bool(data["audit_enabled"]),
        audit_paths=tuple(Path(p) for p in data["audit_paths"]),
        admin=AdminConstraints(
            min_sandbox=SandboxMode.parse(admin["min_sandbox"]) if admin["min_sandbox"] else None,
            min_sandbox_origin=_origin(admin["min_sandbox_origin"]),
            disallowed_policies={
                ApprovalPolicy.parse(p): _origin(o) or Origin("managed")
                for p, o in admin["disallowed_policies"]
            },
            audit_required=_origin(admin["audit_required"]),
            audit_paths=tuple(
                (Path(p), _origin(o) or Origin("managed")) for p, o in admin["audit_paths"]
            ),
            files=tuple(Path(p) for p in admin["files"]),
            max_network=NetworkMode.parse(admin["max_network"]) if admin["max_network"] else None,
            max_network_origin=_origin(admin["max_network_origin"]),
        ),
        profile=data["profile"],
        project_trusted=bool(data["project_trusted"]),
        sources=dict(data["sources"]),
        notices=tuple(data["notices"]),
    )


def _directory(locations: Locations) -> Path:
    return locations.state_dir / "cache"


def resolve_cached(
    options: CliOptions, locations: Locations, *, cwd: Path | None = None
) -> Settings:
    """`resolve`, skipped when nothing it reads has changed since the last identical call."""
    here = (cwd or Path.cwd()).resolve()
    key = cache_key(options, locations, here)
    path = _directory(locations) / f"settings-{key[:32]}.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, IndexError):
        data = json.loads(path.read_text())
        if data.get("key") == key:
            return settings_from_json(data["settings"])
    from harness.config.resolve import resolve

    settings = resolve(options, locations, cwd=here)
    with contextlib.suppress(OSError):
        _store(path, {"key": key, "settings": settings_to_json(settings)})
    return settings


def _store(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(data))
    temporary.chmod(0o600)
    temporary.replace(path)
    entries = sorted(path.parent.glob("settings-*.json"), key=lambda p: p.stat().st_mtime)
    for old in entries[:-KEEP]:
        old.unlink(missing_ok=True)
