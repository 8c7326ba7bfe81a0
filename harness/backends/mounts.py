"""From the plan's paths to concrete mounts, after looking at the host filesystem.

The plan says "keep `.git/hooks` read-only"; this module finds out what is
there. A protected path that exists is bound read-only; one that does not is
covered by an empty read-only mount, so the sandbox cannot create it (hooks
planted in a fresh `.git` would run on the host at the next commit). A
protected path reached through a symlink cannot be held read-only (the
sandbox could swap the link), so the session is refused instead.
"""

from __future__ import annotations

import enum
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from harness.errors import HarnessError
from harness.policy.plan import Access, SandboxPlan


class SessionRefused(HarnessError):
    """The workspace is in a state the sandbox cannot protect."""


class MaskKind(enum.Enum):
    DIRECTORY = "directory"  # an empty read-only tmpfs
    FILE = "file"  # /dev/null bound read-only


@dataclass(frozen=True)
class Bind:
    """A host path bound into the sandbox."""

    host_path: str
    guest_path: str
    read_only: bool


@dataclass(frozen=True)
class Mask:
    """A path inside the sandbox hidden or made uncreatable."""

    guest_path: str
    kind: MaskKind


@dataclass(frozen=True)
class PreparedMounts:
    """Binds in order (later ones cover earlier ones) and masks laid over them."""

    binds: tuple[Bind, ...]
    masks: tuple[Mask, ...]
    created_on_host: tuple[
        str, ...
    ] = ()  # mount points the engine will create, removed afterwards when empty


def prepare_mounts(plan: SandboxPlan) -> PreparedMounts:
    """Look at the host and turn the plan's mounts and protected paths into binds and masks."""
    workspace = Path(plan.workspace)
    binds: list[Bind] = []
    for mount in plan.mounts:
        host = Path(mount.host_path)
        if not host.exists():
            if mount.host_path == plan.workspace:
                raise SessionRefused(
                    f"workspace {host} does not exist; pass an existing directory with -w."
                )
            raise SessionRefused(
                f"[[filesystem]] path {host} does not exist; create it or remove the entry from your config."
            )
        binds.append(Bind(str(host), mount.guest_path, mount.access is Access.READ_ONLY))

    masks: list[Mask] = []
    created: list[str] = []
    always = set(plan.protected_always)
    masked_git = False
    for guest in plan.protected:
        relative = PurePosixPath(guest).relative_to(plan.workspace)
        host = workspace / relative
        _refuse_symlinks(workspace, relative)
        if _exists(host):
            binds.append(Bind(str(host), guest, True))
            continue
        if guest not in always:
            continue
        git_dir = workspace / ".git"
        if relative.parts[0] == ".git" and not git_dir.is_dir():
            if git_dir.is_file():
                binds.append(Bind(str(git_dir), str(PurePosixPath(plan.workspace) / ".git"), True))
            elif not masked_git:
                masks.append(Mask(str(PurePosixPath(plan.workspace) / ".git"), MaskKind.DIRECTORY))
                created.append(str(git_dir))
                masked_git = True
            continue
        kind = MaskKind.FILE if relative.name == "config" else MaskKind.DIRECTORY
        masks.append(Mask(guest, kind))
        created.append(str(host))

    for hidden in plan.hidden:
        path = Path(hidden)
        if _inside(path, workspace) or any(_inside(path, Path(b.host_path)) for b in binds[1:]):
            kind = MaskKind.DIRECTORY if path.is_dir() or not path.exists() else MaskKind.FILE
            masks.append(Mask(str(path), kind))
            if not path.exists():
                created.append(str(path))
    return PreparedMounts(tuple(binds), tuple(masks), tuple(created))


def _exists(path: Path) -> bool:
    try:
        path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _refuse_symlinks(workspace: Path, relative: PurePosixPath) -> None:
    current = workspace
    for part in relative.parts:
        current = current / part
        try:
            info = current.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return
        if stat.S_ISLNK(info.st_mode):
            target = current.readlink()
            raise SessionRefused(
                f"{current} is a symlink (to {target}); harness keeps {workspace / relative} read-only "
                "inside the sandbox, which a symlink would let the sandbox swap. Replace the link with "
                "the real directory or file, then start the session again."
            )


def remove_created_mount_points(prepared: PreparedMounts) -> None:
    """Remove the empty files and directories the engine made for masks; never anything with content."""
    for path_text in sorted(prepared.created_on_host, key=len, reverse=True):
        path = Path(path_text)
        try:
            info = path.lstat()
        except FileNotFoundError:
            continue
        try:
            if stat.S_ISDIR(info.st_mode):
                path.rmdir()  # fails, as it should, when not empty
            elif stat.S_ISREG(info.st_mode) and info.st_size == 0:
                path.unlink()
        except OSError:
            continue
