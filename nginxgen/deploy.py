"""Install a rendered site: atomic write, backup, sites-enabled link, ``nginx -t``, rollback,
reload. The only module that touches the filesystem or runs nginx."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


class DeployError(RuntimeError):
    """The site could not be installed; the previous state has been restored."""


@dataclass(frozen=True)
class Nginx:
    """How to run nginx; tests point it at their own prefix and nginx.conf."""

    binary: str = "/usr/sbin/nginx"
    prefix: str | None = None
    conf: str | None = None
    use_systemctl: bool | None = None  # None: systemctl when systemd runs the stock nginx

    def cmd(self, *extra: str) -> list[str]:
        out = [self.binary]
        if self.prefix:
            out += ["-p", self.prefix]
        if self.conf:
            out += ["-c", self.conf]
        return out + list(extra)

    def test(self) -> tuple[bool, str]:
        """Run the real ``nginx -t``; it opens certificates and logs, so it catches more
        than any parser."""
        try:
            proc = subprocess.run(self.cmd("-t"), capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            return False, f"{self.binary}: not found"
        return proc.returncode == 0, (proc.stdout + proc.stderr).strip()

    def config_files(self) -> list[Path]:
        """Every file nginx reads, main config first, as ``nginx -T`` lists them."""
        proc = subprocess.run(self.cmd("-T"), capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise DeployError(f"nginx -T failed: {(proc.stdout + proc.stderr).strip()}")
        marker = "# configuration file "
        return [
            Path(line[len(marker) :].rstrip().removesuffix(":"))
            for line in proc.stdout.splitlines()
            if line.startswith(marker)
        ]

    def reload(self) -> str:
        systemctl = self.use_systemctl
        if systemctl is None:
            systemctl = (
                self.binary == "/usr/sbin/nginx"
                and not self.prefix
                and not self.conf
                and os.path.isdir("/run/systemd/system")
                and shutil.which("systemctl") is not None
            )
        cmd = ["systemctl", "reload", "nginx"] if systemctl else self.cmd("-s", "reload")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise DeployError(f"{' '.join(cmd)} failed: {(proc.stdout + proc.stderr).strip()}")
        return " ".join(cmd)


@dataclass
class InstallResult:
    dest: Path
    backup: Path | None = None
    link: Path | None = None
    test_output: str = ""
    reloaded_with: str = ""
    notes: list[str] = field(default_factory=list)


def write_atomic(dest: Path, text: str, mode: int = 0o644) -> Path | None:
    """Write via a temp file in the same directory + os.replace, so nginx never reads half a
    file; the previous version is kept as ``<dest>.bak``. Returns the backup path."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    if dest.exists():
        backup = dest.with_name(dest.name + ".bak")
        shutil.copy2(dest, backup)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return backup


def enable_site(dest: Path) -> tuple[Path, bool]:
    """Link ``../sites-enabled/<name>`` to dest; returns (link, created_now)."""
    enabled = dest.parent.parent / "sites-enabled"
    enabled.mkdir(parents=True, exist_ok=True)
    link = enabled / dest.name
    if link.is_symlink() and Path(os.readlink(link)) == dest.resolve():
        return link, False
    if link.exists() and not link.is_symlink():
        raise DeployError(f"{link} exists and is not a symlink; refusing to replace it")
    tmp = enabled / f".{dest.name}.link"
    if tmp.is_symlink():
        tmp.unlink()
    os.symlink(dest.resolve(), tmp)
    os.replace(tmp, link)
    return link, True


def _restore(dest: Path, backup: Path | None) -> None:
    if backup is not None:
        shutil.copy2(backup, dest)
    elif dest.exists():
        dest.unlink()


def install(
    text: str,
    dest: str | Path,
    *,
    enable: bool = False,
    test: bool = False,
    reload: bool = False,
    nginx: Nginx | None = None,
) -> InstallResult:
    """Write the site; with ``test`` run ``nginx -t`` and put the old file (and link state)
    back when it fails; ``reload`` only after a passing test (or when not testing)."""
    nginx = nginx or Nginx()
    dest = Path(dest)
    result = InstallResult(dest=dest)
    result.backup = write_atomic(dest, text)
    created = False
    if enable:
        result.link, created = enable_site(dest)
    if test:
        ok, output = nginx.test()
        result.test_output = output
        if not ok:
            _restore(dest, result.backup)
            if created and result.link is not None:
                result.link.unlink()
            raise DeployError(f"nginx -t failed, previous site restored:\n{output}")
        # nginx -t checks only what nginx.conf includes: a site written elsewhere "passes"
        # without being read at all (missing certificates and all).
        unread = _not_read(nginx, dest, result.link)
        if unread:
            _restore(dest, result.backup)
            if created and result.link is not None:
                result.link.unlink()
            raise DeployError(unread + " Previous state restored.")
    if reload:
        result.reloaded_with = nginx.reload()
    return result


def _not_read(nginx: Nginx, dest: Path, link: Path | None) -> str:
    """Why nginx does not read ``dest`` (through ``link`` or directly), or "" when it does."""
    files = nginx.config_files()
    if dest.resolve() in {f.resolve() for f in files}:
        return ""
    main = files[0] if files else Path(nginx.conf or "nginx.conf")
    via = f" (nor {link})" if link is not None else ""
    return (
        f"nginx -t passed, but nginx never reads {dest}: {main} does not include it{via}. "
        f"Write the site where {main} includes it (Debian: --dest "
        f"/etc/nginx/sites-available/NAME --enable, read through sites-enabled/*), or add "
        f"'include {dest.parent}/*;' inside http {{}} in {main}."
    )
