"""The Debian package (issues 6 and 17): cpack builds it, lintian finds no
error and no warning in it, dpkg installs it where the FHS says, the set-up
commands of docs/operations.md ("Configure"), extracted from the document and
run as written, give a site that `check-config` (as systemd runs it: the
service user with the key-encryption key as its credential) and `doctor`
pass, and `dpkg --purge` leaves nothing behind, not even the enablement
symlink `systemctl enable` made.

It changes the machine (installs a package, adds a system user), so it runs
only as root on a machine without lockbridge installed: CI's. Elsewhere it is
skipped, saying why.
"""

import glob
import grp
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import unittest

from harness import BUILD, ROOT, Broker, Pki

INSTALLED = ["/usr/bin/lockbridge",
             "/usr/lib/systemd/system/lockbridge.service",
             "/usr/lib/sysusers.d/lockbridge.conf",
             "/usr/lib/tmpfiles.d/lockbridge.conf",
             "/usr/lib/sysctl.d/60-lockbridge.conf",
             "/etc/lockbridge/lockbridge.toml.example",
             "/usr/share/man/man8/lockbridge.8.gz",
             "/usr/share/man/man5/lockbridge.toml.5.gz",
             "/usr/share/doc/lockbridge/copyright",
             "/usr/share/doc/lockbridge/changelog.gz",
             "/usr/share/doc/lockbridge/examples/lockbridge.example.toml",
             "/usr/share/doc/lockbridge/operations.md",
             "/usr/share/doc/lockbridge/schemas/events.schema.json"]
ENABLED_LINK = "/etc/systemd/system/multi-user.target.wants/lockbridge.service"


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def setup_commands():
    """The shell commands of operations.md's "Configure" section: every
    indented code block, in order, one command per line."""
    with open(os.path.join(ROOT, "docs/operations.md")) as f:
        text = f.read()
    section = text.split("\n## Configure\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for line in section.splitlines():
        m = re.match(r"^ {7}(\S.*)$", line)  # a code block inside a list item
        if m:
            commands.append(m.group(1))
    return commands


@unittest.skipUnless(os.geteuid() == 0, "installs a package: needs root (CI runs as root)")
class DebianPackage(unittest.TestCase):
    def setUp(self):
        if sh(["dpkg-query", "-W", "lockbridge"]).returncode == 0 or os.path.exists("/etc/lockbridge"):
            self.skipTest("lockbridge is already installed or configured here; not touching it")
        self.tmp = tempfile.mkdtemp(prefix="lockbridge-pkg-")
        os.chmod(self.tmp, 0o755)
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def build(self):
        for old in glob.glob(os.path.join(BUILD, "lockbridge_*.deb")):
            os.remove(old)
        out = sh(["cpack", "-G", "DEB"], cwd=BUILD)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        debs = glob.glob(os.path.join(BUILD, "lockbridge_*.deb"))
        self.assertEqual(len(debs), 1, debs)
        return debs[0]

    def run_as_systemd_would(self, command):
        """`systemd-run --pipe --wait -p User=U -p LoadCredential=NAME:PATH CMD...`
        on a machine without a running systemd: CMD as U, with PATH copied
        into a credentials directory as NAME, as systemd hands it over."""
        args = shlex.split(command)[1:]
        user, creds, rest = None, {}, []
        while args:
            a = args.pop(0)
            if a in ("--pipe", "--wait"):
                continue
            if a == "-p":
                prop, value = args.pop(0).split("=", 1)
                if prop == "User":
                    user = value
                elif prop == "LoadCredential":
                    name, path = value.split(":", 1)
                    creds[name] = path
                else:
                    self.fail(f"the test does not emulate systemd-run -p {prop}")
                continue
            rest = [a] + args
            break
        directory = os.path.join(self.tmp, "credentials")
        os.makedirs(directory, exist_ok=True)
        pw = pwd.getpwnam(user)
        for name, path in creds.items():
            shutil.copy(path, os.path.join(directory, name))
            os.chown(os.path.join(directory, name), pw.pw_uid, pw.pw_gid)
            os.chmod(os.path.join(directory, name), 0o400)
        os.chown(directory, pw.pw_uid, pw.pw_gid)
        os.chmod(directory, 0o500)
        return sh(["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"] + rest,
                  cwd=self.tmp, env=dict(os.environ, CREDENTIALS_DIRECTORY=directory))

    def test_lintian_install_set_up_from_the_docs_and_purge(self):
        deb = self.build()

        # lintian from Debian, at its default level: no error, no warning.
        out = sh(["lintian", "--fail-on", "error,warning", deb])
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertNotRegex(out.stdout, r"(?m)^[EW]: ")

        self.addCleanup(lambda: sh(["dpkg", "--purge", "lockbridge"]))
        out = sh(["dpkg", "-i", deb])
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        for path in INSTALLED:
            self.assertTrue(os.path.isfile(path), path)
        self.assertTrue(os.access("/usr/bin/lockbridge", os.X_OK))
        conffiles = sh(["dpkg-query", "-W", "-f=${Conffiles}", "lockbridge"]).stdout
        self.assertIn("/etc/lockbridge/lockbridge.toml.example", conffiles)
        manual = sh(["man", "-P", "cat", "lockbridge.toml"], env=dict(os.environ, MANWIDTH="80"))
        self.assertEqual(manual.returncode, 0, manual.stderr)
        self.assertIn("dtls_listen", manual.stdout)
        user = pwd.getpwnam("lockbridge")
        self.assertEqual(user.pw_shell, "/usr/sbin/nologin")
        gid = grp.getgrnam("lockbridge").gr_gid
        for d in ["/etc/lockbridge", "/etc/lockbridge/locks", "/etc/lockbridge/secrets",
                  "/etc/lockbridge/tls"]:
            st = os.stat(d)
            self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid), (0o750, 0, gid), d)
        self.assertEqual(sh(["/usr/bin/lockbridge", "--version"]).stdout.strip(),
                         "lockbridge 0.1.0")

        # The cloud for this site: a CA, and a broker with a certificate from it.
        pki = Pki(os.path.join(self.tmp, "pki"), days=3650)
        server_cert, server_key = pki.issue("localhost", server=True)
        broker = Broker(self.tmp, pki.ca, server_cert, server_key)
        broker.start()
        self.addCleanup(broker.stop)

        # operations.md's "Configure", command by command, as written.
        commands = setup_commands()
        self.assertGreaterEqual(len(commands), 10, commands)
        seen = set()
        for command in commands:
            seen.add(command.split()[0] if not command.startswith("lockbridge ")
                     else " ".join(command.split()[:2]))
            if command.startswith("install -m 0644 gateway.pem ca.pem"):
                # What "send gateway.csr to the cloud's CA" gives back.
                sh(["openssl", "x509", "-req", "-in", os.path.join(self.tmp, "gateway.csr"),
                    "-CA", pki.ca, "-CAkey", pki.ca_key, "-CAcreateserial", "-days", "365",
                    "-copy_extensions", "copy", "-out", os.path.join(self.tmp, "gateway.pem")],
                   check=True)
                shutil.copy(pki.ca, os.path.join(self.tmp, "ca.pem"))
            if command.startswith("systemd-run "):
                out = self.run_as_systemd_would(command)
                self.assertEqual(out.returncode, 0, f"{command}\n{out.stdout}{out.stderr}")
                self.assertIn("/etc/lockbridge/lockbridge.toml: OK", out.stdout)
                self.assertNotIn("warning", out.stderr)
                continue
            if command == "systemctl enable --now lockbridge":
                # No service manager runs here: enable only (what a boot starts).
                out = sh(["systemctl", "enable", "lockbridge"])
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertTrue(os.path.islink(ENABLED_LINK))
                continue
            out = sh(["sh", "-ec", command], cwd=self.tmp)
            self.assertEqual(out.returncode, 0, f"{command}\n{out.stdout}{out.stderr}\n"
                                                f"{self.doctor_text()}")
            if command.startswith("install -m 0640 -g lockbridge /etc/lockbridge/lockbridge.toml.example"):
                # "and edit": the one thing this site differs in, its broker.
                path = "/etc/lockbridge/lockbridge.toml"
                with open(path) as f:
                    text = f.read()
                self.assertIn('broker = "ssl://mqtt.example.net:8883"', text)
                with open(path, "w") as f:
                    f.write(text.replace("ssl://mqtt.example.net:8883", broker.uri))
            if command.startswith("lockbridge doctor"):
                self.assertIn("0 error(s), 0 warning(s)", out.stdout, out.stdout)
        # The steps that matter most are there (a document that lost them fails).
        for step in ["lockbridge provision", "openssl", "install", "systemd-run",
                     "lockbridge doctor", "systemctl"]:
            self.assertIn(step, seen)
        for lock in ["lock-01", "lock-02"]:
            st = os.stat(f"/etc/lockbridge/locks/{lock}.psk")
            self.assertEqual((stat.S_IMODE(st.st_mode), st.st_gid), (0o640, gid))
        st = os.stat("/etc/lockbridge/secrets/kek.key")
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid), (0o600, 0, 0))

        # Without systemd's credential, check-config says how to give the key.
        out = sh(["/usr/bin/lockbridge", "check-config", "--config", "/etc/lockbridge/lockbridge.toml"])
        self.assertEqual(out.returncode, 78, out.stdout + out.stderr)
        self.assertIn("LoadCredential=lockbridge.kek", out.stderr)
        # No state yet (/var/lib/lockbridge is made by systemd's StateDirectory=):
        # the stats say so, create nothing and do not hang.
        stats = sh(["/usr/bin/lockbridge", "credentials", "stats", "--config",
                    "/etc/lockbridge/lockbridge.toml", "--json"],
                   env=dict(os.environ, CREDENTIALS_DIRECTORY=os.path.join(self.tmp, "credentials")))
        self.assertEqual(stats.returncode, 1, stats.stdout + stats.stderr)
        self.assertIn("no state yet", stats.stderr)
        self.assertFalse(os.path.exists("/var/lib/lockbridge/data.mdb"))

        # A remove keeps the site's files; a purge takes them and the symlink.
        out = sh(["dpkg", "--remove", "lockbridge"])
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertTrue(os.path.exists("/etc/lockbridge/lockbridge.toml"))
        self.assertFalse(os.path.exists("/usr/bin/lockbridge"))
        out = sh(["dpkg", "--purge", "lockbridge"])
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        for path in INSTALLED + ["/etc/lockbridge", "/var/lib/lockbridge"]:
            self.assertFalse(os.path.exists(path), path)
        self.assertFalse(os.path.lexists(ENABLED_LINK), "the enablement symlink is left behind")

    def doctor_text(self):
        if not os.path.exists("/etc/lockbridge/lockbridge.toml"):
            return ""
        return sh(["/usr/bin/lockbridge", "doctor", "--config",
                   "/etc/lockbridge/lockbridge.toml"]).stdout


if __name__ == "__main__":
    unittest.main()
