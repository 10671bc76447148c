"""A real OpenSSH server on loopback serving bare git repositories, for git-over-SSH tests.

Debian's ``openssh-server`` (``/usr/sbin/sshd``, in ``scripts/test``'s package
list) runs in the foreground on a free ``127.0.0.1`` port with a host key,
configuration, PID file and ``authorized_keys`` of its own under the test's
directory; the machine's sshd configuration takes no part. The one authorized
key may only run ``git-shell`` (a forced command), so it reaches git's
upload-pack and receive-pack and nothing else.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox.registry import free_port

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")  # sshd refuses to start as root without it


@dataclass
class Keypair:
    private: str
    public: str  # "ssh-ed25519 AAAA..."


def keypair(path: Path) -> Keypair:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )
    public = Path(f"{path}.pub").read_text().split()
    return Keypair(path.read_text(), f"{public[0]} {public[1]}")


@dataclass
class SshServer:
    root: Path
    port: int
    user: str
    host_key: Keypair
    client_key: Keypair
    process: subprocess.Popen[bytes]

    def url(self, repository: Path) -> str:
        """``ssh://`` URL of a bare repository on this machine."""
        return f"ssh://{self.user}@127.0.0.1:{self.port}{repository}"

    def scp_url(self, repository: Path) -> str:
        """The same repository in scp form, which cannot carry a port: needs port 22."""
        return f"{self.user}@127.0.0.1:{repository}"

    @property
    def known_hosts(self) -> str:
        """A ``known_hosts`` line for this server's host key."""
        return f"[127.0.0.1]:{self.port} {self.host_key.public}\n"

    def log(self) -> str:
        return (self.root / "sshd.log").read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_sshd(root: Path) -> SshServer:
    """An sshd on a free loopback port; ``stop()`` it when done."""
    if not SSHD.exists():
        raise RuntimeError(f"{SSHD} is missing: apt-get install openssh-server")
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    host_key = keypair(root / "host_key")
    client_key = keypair(root / "client_key")
    git_shell = shutil.which("git-shell") or "/usr/bin/git-shell"
    restrictions = "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty"
    (root / "authorized_keys").write_text(
        f'command="{git_shell} -c \\"$SSH_ORIGINAL_COMMAND\\"",{restrictions} {client_key.public}\n'
    )
    user = getpass.getuser()
    config = root / "sshd_config"
    last_error = ""
    for _ in range(5):  # another process may take the free port before sshd binds it
        port = free_port()
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {root / 'host_key'}",
                    f"PidFile {root / 'sshd.pid'}",
                    f"AuthorizedKeysFile {root / 'authorized_keys'}",
                    f"AllowUsers {user}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PrintMotd no",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        log = (root / "sshd.log").open("wb")
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=log
        )
        log.close()
        if _serving(port, process):
            return SshServer(root, port, user, host_key, client_key, process)
        process.kill()
        process.wait()
        last_error = (root / "sshd.log").read_text(errors="replace")
    raise RuntimeError(f"sshd did not start: {last_error.strip()[-500:]}")


def _serving(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    """Whether sshd answers with its banner on ``port`` before it exits or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-2.0-"):
                    return True
        except OSError:
            time.sleep(0.05)  # not listening yet: a connection attempt is the condition
    return False
