"""The resolved configuration as plain values (no pydantic: the cache rebuilds these cheaply)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.policy.envpolicy import EnvPolicy
from harness.policy.modes import ApprovalPolicy, NetworkMode, SandboxMode
from harness.policy.plan import Limits
from harness.policy.rules import FilesystemRule, NetworkRule, Origin, PrefixRule


@dataclass(frozen=True)
class AdminConstraints:
    """The floor from managed files; each constraint remembers which file set it."""

    min_sandbox: SandboxMode | None = None
    min_sandbox_origin: Origin | None = None
    disallowed_policies: dict[ApprovalPolicy, Origin] = field(default_factory=dict)
    audit_required: Origin | None = None
    audit_paths: tuple[tuple[Path, Origin], ...] = ()
    files: tuple[Path, ...] = ()
    max_network: NetworkMode | None = None
    max_network_origin: Origin | None = None


@dataclass(frozen=True)
class Settings:
    """Every effective setting of one invocation, and where each came from."""

    workspace: Path
    approval_policy: ApprovalPolicy
    sandbox_mode: SandboxMode
    backend: str
    image: str | None
    network_mode: NetworkMode
    smart_approvals: bool
    protected_paths: tuple[str, ...]
    filesystem: tuple[FilesystemRule, ...]
    network_rules: tuple[NetworkRule, ...]
    prefix_rules: tuple[PrefixRule, ...]
    limits: Limits
    env: EnvPolicy
    guardian_command: tuple[str, ...] | None
    guardian_timeout: float
    audit_enabled: bool
    audit_paths: tuple[Path, ...]
    admin: AdminConstraints
    profile: str | None
    project_trusted: bool
    sources: dict[str, str]
    notices: tuple[str, ...] = ()

    def effective(self) -> dict[str, Any]:
        """Dotted keys → JSON-ready values, for `config show`."""
        return {
            "approval.policy": self.approval_policy.value,
            "sandbox.mode": self.sandbox_mode.value,
            "sandbox.backend": self.backend,
            "sandbox.image": self.image,
            "sandbox.network": self.network_mode.value,
            "sandbox.protected_paths": list(self.protected_paths),
            "features.smart_approvals": self.smart_approvals,
            "limits.pids": self.limits.pids,
            "limits.memory": self.limits.memory_bytes,
            "limits.cpus": self.limits.cpus,
            "env.pass": sorted(self.env.passthrough),
            "env.set": sorted(self.env.fixed),
            "guardian.command": list(self.guardian_command) if self.guardian_command else None,
            "guardian.timeout": self.guardian_timeout,
            "audit.enabled": self.audit_enabled,
            "audit.path": [str(p) for p in self.audit_paths],
            "filesystem": [
                {"path": r.path, "access": r.access.value, "source": r.origin.layer}
                for r in self.filesystem
            ],
            "network": [
                {"domain": r.domain, "allow": r.allow, "port": r.port, "source": r.origin.layer}
                for r in self.network_rules
            ],
            "prefix_rules": [
                {"pattern": r.pattern, "action": r.action.value, "source": r.origin.layer}
                for r in self.prefix_rules
            ],
            "workspace": str(self.workspace),
            "project.trusted": self.project_trusted,
        }
