"""Who the traced app runs as, and dropping to that account in the server child.

Tracing needs root, the app does not. Started through sudo, the server child runs as the
invoking user (SUDO_UID/SUDO_GID): the tracer starts it as that account (`child_credentials`
for subprocess.Popen), so neither the app's interpreter nor a line of the app ever runs as
root, and the child checks it (`drop_to`); `--user NAME` picks another account; started by
root directly (no sudo), the app runs as root and the dashboard says so in red.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from typing import Any


class PrivilegeError(RuntimeError):
    """The account cannot be resolved or switched to; the message is one sentence."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    def spec(self) -> str:
        """The form run_child's --run-as takes: NAME:UID:GID."""
        return f"{self.name}:{self.uid}:{self.gid}"

    @classmethod
    def from_spec(cls, spec: str) -> Account:
        name, uid, gid = spec.rsplit(":", 2)
        return cls(name, int(uid), int(gid), _home_of(int(uid)))


def _home_of(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return "/"


def resolve_account(user: str | None, environ: dict[str, str] | None = None) -> Account:
    """The account the app should run as: --user, else the sudo caller, else whoever we are."""
    env = os.environ if environ is None else environ
    if user:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise PrivilegeError(f"there is no user called {user!r} on this machine") from None
        return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
    if os.geteuid() == 0 and env.get("SUDO_UID"):
        try:
            uid, gid = int(env["SUDO_UID"]), int(env.get("SUDO_GID", env["SUDO_UID"]))
        except ValueError:
            raise PrivilegeError("SUDO_UID/SUDO_GID are not numbers") from None
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = env.get("SUDO_USER", str(uid))
        return Account(name, uid, gid, _home_of(uid))
    uid = os.geteuid()
    try:
        entry = pwd.getpwuid(uid)
        return Account(entry.pw_name, uid, os.getegid(), entry.pw_dir)
    except KeyError:
        return Account(str(uid), uid, os.getegid(), "/")


def child_credentials(account: Account) -> dict[str, Any]:
    """subprocess.Popen keyword arguments that start a process as `account` (from root)."""
    if account.uid == os.geteuid():
        return {}
    try:
        groups = os.getgrouplist(account.name, account.gid)
    except OSError:
        groups = [account.gid]
    return {"user": account.uid, "group": account.gid, "extra_groups": groups}


def account_environment(account: Account) -> dict[str, str]:
    """HOME, USER and LOGNAME of `account` (what `sudo -u` would set)."""
    return {"HOME": account.home, "USER": account.name, "LOGNAME": account.name}


def drop_to(account: Account) -> None:
    """Become `account` for good (supplementary groups, gid, then uid), or raise.

    Called in the server child before the app is imported (usually a check only: the child
    was started as the account). Verified afterwards: a process that could switch back to
    root has not dropped anything.
    """
    if not (os.geteuid() == account.uid and os.getegid() == account.gid):
        try:
            try:
                os.initgroups(account.name, account.gid)
            except OSError:
                os.setgroups([account.gid])
            os.setgid(account.gid)
            os.setuid(account.uid)
        except OSError as exc:
            raise PrivilegeError(f"cannot switch to user {account.name}: {exc.strerror}") from exc
    if account.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise PrivilegeError(f"switched to {account.name} but could regain root; refusing")
    os.environ.update(account_environment(account))
