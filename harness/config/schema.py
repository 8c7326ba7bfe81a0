"""The TOML schema of DESIGN.md, validated with pydantic, with errors a person can act on.

Every section is optional; a value that is absent is simply not set by that
layer. Unknown keys are errors that name the closest valid key; bad values
list the allowed ones; malformed TOML names the file, line and column.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.errors import ConfigError

PolicyName = Literal["untrusted", "on-request", "on-failure", "never"]
ModeName = Literal["read-only", "workspace-write", "danger-full-access"]
BackendName = Literal["auto", "docker", "podman", "vm", "native"]
NetworkName = Literal["none", "allowlist", "full"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ApprovalSection(_Section):
    policy: PolicyName | None = None


class SandboxSection(_Section):
    mode: ModeName | None = None
    backend: BackendName | None = None
    image: str | None = None
    network: NetworkName | None = None
    network_access: bool | None = None
    protected_paths: list[str] | None = None


class FeaturesSection(_Section):
    smart_approvals: bool | None = None


class FilesystemEntry(_Section):
    path: str
    access: Literal["read", "write", "none"]


class NetworkEntry(_Section):
    domain: str
    allow: bool = True
    port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("domain")
    @classmethod
    def _domain_shape(cls, value: str) -> str:
        if not re.fullmatch(r"(\*\.)?[A-Za-z0-9_.:\[\]-]+", value) or value.startswith("."):
            raise ValueError("a host name, `*.example.com`, or an IP address")
        return value.lower()


class PrefixRuleEntry(_Section):
    pattern: str
    action: Literal["forbidden", "prompt", "allow"]
    justification: str | None = None

    @field_validator("pattern")
    @classmethod
    def _pattern_words(cls, value: str) -> str:
        import shlex

        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split into words ({exc})") from None
        if not words:
            raise ValueError("an empty pattern would match every command")
        return value


class LimitsSection(_Section):
    pids: int | None = Field(default=None, ge=16)
    memory: str | int | None = None
    cpus: float | None = Field(default=None, gt=0)

    @field_validator("memory")
    @classmethod
    def _memory_size(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            parse_size(value)
        return value


class EnvSection(_Section):
    pass_: list[str] | None = Field(default=None, alias="pass")
    set: dict[str, str] | None = None


class GuardianSection(_Section):
    command: list[str] | None = None
    timeout: float | None = Field(default=None, gt=0, le=600)


class AuditSection(_Section):
    enabled: bool | None = None
    path: str | None = None


class AdminSection(_Section):
    min_sandbox: ModeName | None = None
    max_network: NetworkName | None = None
    disallow_policies: list[PolicyName] | None = None
    audit_required: bool | None = None
    audit_path: str | None = None


class ConfigFile(_Section):
    """One TOML file: any layer, or a built-in profile."""

    approval: ApprovalSection = ApprovalSection()
    sandbox: SandboxSection = SandboxSection()
    features: FeaturesSection = FeaturesSection()
    filesystem: list[FilesystemEntry] = []
    network: list[NetworkEntry] = []
    prefix_rules: list[PrefixRuleEntry] = []
    limits: LimitsSection = LimitsSection()
    env: EnvSection = EnvSection()
    guardian: GuardianSection = GuardianSection()
    audit: AuditSection = AuditSection()
    admin: AdminSection = AdminSection()


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(value: str | int) -> int:
    """`4GiB`, `512m`, `1g`, or a number of bytes → bytes."""
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("must be a positive number of bytes")
        return value
    match = _SIZE.match(value)
    if not match:
        raise ValueError("a size such as `4GiB`, `512MiB`, `2g` or a number of bytes")
    number, unit, _ = match.groups()
    scale = 1024 ** "bkmgt".index(unit.lower() or "b")
    size = int(float(number) * scale)
    if size <= 0:
        raise ValueError("must be positive")
    return size


def parse_config(text: str, source: str) -> ConfigFile:
    """Parse and validate TOML text; `source` names the file in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_message(exc, source, text), path=source) from None
    return validate_config(data, source)


def load_config(path: Path) -> ConfigFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot be read ({exc.strerror}); fix its permissions or remove it.",
            path=str(path),
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path}: is not UTF-8 text; save it as UTF-8 TOML.", path=str(path)
        ) from None
    return parse_config(text, str(path))


def validate_config(data: dict[str, Any], source: str) -> ConfigFile:
    try:
        return ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, data, source) from None


def _toml_message(exc: tomllib.TOMLDecodeError, source: str, document: str) -> str:
    text = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", text)
    what = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", text)
    if match:
        where = f"line {match.group(1)}, column {match.group(2)}"
    else:
        last = document.rstrip("\n").split("\n")
        where = f"line {len(last)}, column {len(last[-1]) + 1} (the end of the file)"
    return (
        f"{source}: malformed TOML at {where}: {what}. "
        "Fix the syntax there (see https://toml.io); nothing was run."
    )


def _dotted(location: tuple[int | str, ...]) -> str:
    out = ""
    for part in location:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + ("pass" if part == "pass_" else part)
    return out


def _model_at(location: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = ConfigFile
    for part in location:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None
        )
        if field is None:
            return model
        annotation = field.annotation
        inner = _model_in(annotation)
        if inner is None:
            return model
        model = inner
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _validation_error(exc: ValidationError, data: dict[str, Any], source: str) -> ConfigError:
    problems: list[str] = []
    first_key: str | None = None
    for error in exc.errors():
        location = tuple(error["loc"])
        key = _dotted(location)
        first_key = first_key or key
        kind = error["type"]
        if kind == "extra_forbidden":
            parent = _model_at(location[:-1])
            valid = _field_names(parent) if parent else []
            name = str(location[-1])
            close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
            hint = (
                f"did you mean `{_dotted((*location[:-1], close[0]))}`?" if close else "remove it"
            )
            section = _dotted(location[:-1]) or "the top level"
            problems.append(
                f"unknown key `{key}`: {hint} (valid keys in {section}: {', '.join(valid)})"
            )
        elif kind == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            value = error.get("input")
            problems.append(f"`{key}` = {value!r} is not allowed; allowed values: {expected}")
        elif kind == "missing":
            problems.append(f"`{key}` is required")
        elif kind == "value_error":
            message = str(error.get("msg", "")).removeprefix("Value error, ")
            problems.append(f"`{key}` = {error.get('input')!r} is not valid: expected {message}")
        else:
            problems.append(f"`{key}` = {error.get('input')!r}: {error['msg']}")
    detail = "; ".join(problems)
    return ConfigError(
        f"{source}: {detail}. Fix the file; nothing was run.", path=source, key=first_key
    )
