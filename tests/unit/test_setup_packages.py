"""The Makefile installs a JDK and Maven from Debian's packages when `java` or `mvn` is
missing: apt-get as root, through sudo otherwise, else a one-line error.

`make jdk` runs on a PATH holding only stand-ins for apt-get, sudo and id that record
their arguments, so the real apt-get never runs and the machine's own Java stays out of
sight. The stand-in apt-get "installs" by writing `java` and `mvn` stubs.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def _script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _run_make_jdk(
    tmp_path: Path, *, uid: int, sudo: bool, apt: bool, apt_installs: bool = True
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    _script(bin_dir / "id", f"echo {uid}\n")
    env_tool = shutil.which("env")
    assert env_tool is not None
    (bin_dir / "env").symlink_to(env_tool)
    if sudo:
        _script(bin_dir / "sudo", f'echo "sudo $*" >> {log}\nexec "$@"\n')
    if apt:
        stubs = "".join(
            f"printf '#!/bin/sh\\n' > {bin_dir / tool}; /bin/chmod +x {bin_dir / tool}\n"
            for tool in ("java", "mvn")
        )
        _script(
            bin_dir / "apt-get",
            f'echo "apt-get $* frontend=$DEBIAN_FRONTEND" >> {log}\n'
            'case "$*" in *install*)\n' + (stubs if apt_installs else "") + ";;\nesac\n",
        )
    assert MAKE is not None
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    done = subprocess.run(
        [MAKE, "-s", "-C", str(ROOT), "jdk"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return done, calls


def test_root_installs_the_jdk_and_maven_with_apt_get(tmp_path: Path) -> None:
    done, calls = _run_make_jdk(tmp_path, uid=0, sudo=False, apt=True)
    assert done.returncode == 0, done.stderr
    assert calls == [
        "apt-get update -qq frontend=",
        "apt-get install -y -qq default-jdk-headless maven frontend=noninteractive",
    ]
    assert "installing a JDK and Maven from Debian's packages" in done.stdout


def test_a_user_installs_them_through_sudo(tmp_path: Path) -> None:
    done, calls = _run_make_jdk(tmp_path, uid=1000, sudo=True, apt=True)
    assert done.returncode == 0, done.stderr
    assert "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq " in "\n".join(calls)
    assert [call for call in calls if call.startswith("sudo")] == [
        "sudo apt-get update -qq",
        "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jdk-headless maven",
    ]


def test_a_user_without_sudo_gets_one_line_saying_what_to_install(tmp_path: Path) -> None:
    done, calls = _run_make_jdk(tmp_path, uid=1000, sudo=False, apt=True)
    assert done.returncode != 0
    assert calls == []
    ours = [line for line in done.stderr.splitlines() if not line.startswith("make: ***")]
    assert ours == [
        "make: a JDK and Maven missing: run as root, or apt-get install default-jdk-headless maven"
    ]


def test_no_apt_get_is_one_line_too(tmp_path: Path) -> None:
    done, _ = _run_make_jdk(tmp_path, uid=0, sudo=False, apt=False)
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if not line.startswith("make: ***")]
    assert len(ours) == 1 and "no apt-get here" in ours[0]


def test_tools_still_missing_after_the_install_fail_the_target(tmp_path: Path) -> None:
    done, calls = _run_make_jdk(tmp_path, uid=0, sudo=False, apt=True, apt_installs=False)
    assert done.returncode != 0
    assert len(calls) == 2
    assert "java or mvn not on PATH after installing them" in done.stderr


def test_present_tools_install_nothing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "present"
    bin_dir.mkdir()
    for tool in ("java", "mvn"):
        _script(bin_dir / tool, "")
    assert MAKE is not None
    done = subprocess.run(
        [MAKE, "-s", "-C", str(ROOT), "jdk"],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # No apt-get on this PATH: reaching for it would have failed the target.
    assert done.returncode == 0, done.stderr
    assert "installing" not in done.stdout
