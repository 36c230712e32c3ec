"""Devices for the arm_cpu runner: `--device` strings, ssh against a real loopback sshd (when
this machine has OpenSSH's server and may start it), ssh and adb replaced by fakes on PATH
that run everything locally, and the errors when a tool is missing or the device is unreachable.

The reference for every remote run is the same artifact run locally: outputs must be equal
bit for bit, and the remote temporary directory must be gone afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

import edgekiln
from edgekiln.backends.arm_cpu.runner import ArmCpuRunner
from edgekiln.backends.arm_cpu.transport import (
    SSH_OPTIONS_ENV,
    AdbTransport,
    SshTransport,
    TransportError,
    choose_transport,
    parse_device,
)
from edgekiln.errors import ArtifactError
from tests.support.graphs import conv_relu_model

SSHD = "/usr/sbin/sshd"

# ssh [-p PORT] [-o OPT]... [-F FILE] DEST COMMAND: runs COMMAND here; DEST "down" is unreachable.
FAKE_SSH = r"""#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in -p|-o|-F|-i) shift 2;; -*) shift;; *) break;; esac
done
dest="$1"; shift
echo "ssh $dest $*" >> "$FAKE_LOG"
case "$dest" in *down*) echo "ssh: connect to host down port 22: Connection refused" >&2; exit 255;; esac
exec sh -c "$*"
"""
# adb [-s SERIAL] shell CMD | push SRC... DIR | pull SRC... DIR, with /data/local/tmp under $FAKE_ADB_ROOT.
FAKE_ADB = r"""#!/bin/sh
if [ "$1" = "-s" ]; then
  [ "$2" = "gone" ] && { echo "adb: device 'gone' not found" >&2; exit 1; }
  shift 2
fi
cmd="$1"; shift
echo "adb $cmd $*" >> "$FAKE_LOG"
map() { printf '%s' "$1" | sed "s#/data/local/tmp#$FAKE_ADB_ROOT#g"; }
case "$cmd" in
  shell) exec sh -c "$(map "$*")";;
  push|pull) set -- $(map "$*"); exec cp "$@";;
esac
exit 1
"""


def _script(folder: Path, name: str, text: str) -> None:
    path = folder / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture(scope="module")
def host_artifact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    model = folder / "conv.onnx"
    import onnx

    onnx.save(conv_relu_model(), model)
    artifact = edgekiln.compile(model)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    expected = ArmCpuRunner(artifact.files, artifact.manifest, transport="local").run({"x": x})
    return artifact, {"x": x}, expected


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    """Fake ssh and adb first on PATH; returns the log of their calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("ssh", FAKE_SSH), ("adb", FAKE_ADB)):
        _script(bin_dir, name, text)
    log = tmp_path / "calls.log"
    root = tmp_path / "android"
    root.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    return log, root


def test_device_strings():
    assert parse_device("local") == ("local", {})
    assert parse_device("qemu") == ("qemu", {"cpu": None})
    assert parse_device("qemu:cortex-a53") == ("qemu", {"cpu": "cortex-a53"})
    assert parse_device("ssh://pi@10.0.0.2:2222") == ("ssh", {"user": "pi", "host": "10.0.0.2", "port": 2222})
    assert parse_device("ssh://board") == ("ssh", {"user": None, "host": "board", "port": None})
    assert parse_device("adb") == ("adb", {"serial": None})
    assert parse_device("adb:emulator-5554") == ("adb", {"serial": "emulator-5554"})
    for bad in ("ssh://", "usb", "ssh://a@b:port"):
        with pytest.raises(ArtifactError, match="unknown device"):
            parse_device(bad)


def test_qemu_device_picks_the_cpu_model():
    if shutil.which("qemu-aarch64") is None:
        pytest.skip("no qemu-aarch64")
    transport = choose_transport("aarch64", "cortex-a76", "qemu:max")
    assert transport.name == "qemu" and transport.prefix[-2:] == ("-cpu", "max")
    assert choose_transport("aarch64", "cortex-a76", "qemu").prefix[-2:] == ("-cpu", "cortex-a76")


def test_fake_ssh_runs_bit_exact_and_cleans_up(host_artifact, fake_tools, monkeypatch):
    artifact, feeds, expected = host_artifact
    log, _ = fake_tools
    monkeypatch.setenv(SSH_OPTIONS_ENV, "-F /dev/null")
    runner = ArmCpuRunner(artifact.files, artifact.manifest, transport="ssh://me@board:2200")
    assert isinstance(runner.transport, SshTransport) and runner.transport.name == "ssh://me@board:2200"
    got = runner.run(feeds)
    np.testing.assert_array_equal(got["y"], expected["y"])
    calls = log.read_text().splitlines()
    remote = calls[0].split()  # the mktemp call; the directory is in the rm -rf call
    assert remote[:2] == ["ssh", "me@board"] and any(" -xf -" in c for c in calls) and any(" -cf -" in c for c in calls)
    removed = [c.split("rm -rf ")[1].strip("'") for c in calls if "rm -rf" in c]
    assert len(removed) == 1 and not Path(removed[0]).exists()


def test_fake_adb_runs_bit_exact_and_cleans_up(host_artifact, fake_tools):
    artifact, feeds, expected = host_artifact
    log, root = fake_tools
    runner = ArmCpuRunner(artifact.files, artifact.manifest, transport="adb:emulator-5554")
    assert isinstance(runner.transport, AdbTransport)
    stats = runner.bench(feeds, repeat=2, warmup=0)
    assert stats["transport"] == "adb:emulator-5554" and len(stats["profile"]) >= 1
    np.testing.assert_array_equal(runner.run(feeds)["y"], expected["y"])
    text = log.read_text()
    assert "adb push" in text and "adb pull" in text and "/data/local/tmp/edgekiln-remote-" in text
    assert list(root.iterdir()) == []  # every remote directory removed


def test_unreachable_devices_fail_with_one_clear_line(host_artifact, fake_tools):
    artifact, feeds, _ = host_artifact
    with pytest.raises(TransportError, match=r"cannot reach ssh://me@down: ssh: connect to host down"):
        ArmCpuRunner(artifact.files, artifact.manifest, transport="ssh://me@down").run(feeds)
    with pytest.raises(TransportError, match=r"cannot reach adb:gone: adb: device 'gone' not found"):
        ArmCpuRunner(artifact.files, artifact.manifest, transport="adb:gone").run(feeds)


def test_wrong_architecture_is_refused(host_artifact, fake_tools):
    artifact, feeds, _ = host_artifact
    transport = SshTransport("aarch64", "me", "board", None)  # the fake "device" is this x86_64 machine
    runner = ArmCpuRunner(artifact.files, artifact.manifest)
    runner.transport = transport
    if os.uname().machine == "aarch64":
        pytest.skip("this machine is aarch64")
    with pytest.raises(TransportError, match="is an x86_64 machine; the artifact's runner is built for aarch64"):
        runner.run(feeds)


def test_missing_tools_are_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(TransportError, match=r"ssh not found.*openssh-client"):
        choose_transport("aarch64", None, "ssh://pi@board")
    with pytest.raises(TransportError, match=r"adb not found.*apt-get install adb"):
        choose_transport("aarch64", None, "adb")


# ---- a real sshd on the loopback interface ----

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def loopback_sshd(tmp_path, monkeypatch):
    """sshd -D on 127.0.0.1 with a throwaway host key and user key; skips where it cannot run."""
    if not Path(SSHD).is_file() or shutil.which("ssh-keygen") is None:
        pytest.skip("no OpenSSH server (Debian: apt-get install openssh-server)")
    if os.geteuid() != 0 and not Path("/run/sshd").is_dir():
        pytest.skip("sshd needs its privilege separation directory /run/sshd")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / key)], check=True)
    shutil.copy(tmp_path / "user_key.pub", tmp_path / "authorized_keys")
    port = _free_port()
    (tmp_path / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path}/host_key\n"
        f"AuthorizedKeysFile {tmp_path}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"StrictModes no\nUsePAM no\nPidFile {tmp_path}/sshd.pid\n")
    (tmp_path / "ssh_config").write_text(
        f"Host *\n  IdentityFile {tmp_path}/user_key\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
        "  LogLevel ERROR\n")
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(tmp_path / "sshd_config")], stderr=subprocess.PIPE,
                              text=True)
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
    monkeypatch.setenv(SSH_OPTIONS_ENV, f"-F {tmp_path / 'ssh_config'}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = subprocess.run(["ssh", "-F", str(tmp_path / "ssh_config"), "-p", str(port), f"{user}@127.0.0.1",
                                "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            break
        if server.poll() is not None:
            pytest.skip(f"sshd did not start: {server.stderr.read().strip()[-300:]}")
        time.sleep(0.2)
    else:
        server.terminate()
        pytest.skip("sshd did not accept the throwaway key within 10 s")
    yield f"ssh://{user}@127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=10)


def test_loopback_sshd_runs_bit_exact(host_artifact, loopback_sshd):
    artifact, feeds, expected = host_artifact
    before = set(Path("/tmp").glob("edgekiln-remote-*"))
    runner = ArmCpuRunner(artifact.files, artifact.manifest, transport=loopback_sshd)
    np.testing.assert_array_equal(runner.run(feeds)["y"], expected["y"])
    stats = runner.bench(feeds, repeat=3, warmup=1)
    assert stats["transport"] == loopback_sshd and stats["latency_ms"]["min"] > 0
    assert set(Path("/tmp").glob("edgekiln-remote-*")) <= before  # the remote directories are gone
