"""Resolving the account the app runs as, and dropping to it for good."""

from __future__ import annotations

import os

import pytest

from tracer.session.privileges import Account, PrivilegeError, drop_to, resolve_account

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")


@root_only
def test_sudo_caller_is_the_default_account() -> None:
    account = resolve_account(None, {"SUDO_UID": "65534", "SUDO_GID": "65534"})
    assert (account.name, account.uid, account.gid) == ("nobody", 65534, 65534)
    assert not account.is_root


def test_explicit_user_wins_and_unknown_user_is_one_clear_sentence() -> None:
    assert resolve_account("nobody", {"SUDO_UID": "0"}).uid == 65534
    with pytest.raises(PrivilegeError, match="no user called 'no-such-user-xyz'"):
        resolve_account("no-such-user-xyz")


@root_only
def test_root_without_sudo_stays_root() -> None:
    account = resolve_account(None, {})
    assert account.is_root and account.name == "root"


def test_spec_round_trip() -> None:
    account = Account("nobody", 65534, 65534, "/nonexistent")
    assert Account.from_spec(account.spec()).uid == 65534


@root_only
def test_drop_is_permanent_in_a_child_process() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop, then try to get root back
        os.close(read_end)
        try:
            drop_to(Account("nobody", 65534, 65534, "/nonexistent"))
            try:
                os.setuid(0)
                verdict = b"regained"
            except PermissionError:
                verdict = f"{os.getuid()}:{os.getgid()}:{os.environ['USER']}".encode()
        except Exception as exc:  # report, never raise out of a forked child
            verdict = repr(exc).encode()
        os.write(write_end, verdict)
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        assert pipe.read() == b"65534:65534:nobody"
