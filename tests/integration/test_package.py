"""The Debian package (issue 6): cpack builds it, dpkg installs it where the
FHS says, an installer's steps (keys, `lockbridge provision lock`, TLS files,
the shipped example config) pass `lockbridge check-config` with the installed
binary, and `dpkg --purge` leaves nothing behind.

It changes the machine (installs a package, adds a system user), so it runs
only as root on a machine without lockbridge installed: CI's. Elsewhere it is
skipped, saying why.
"""

import glob
import grp
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import unittest

from harness import BUILD, Pki

INSTALLED = ["/usr/bin/lockbridge",
             "/usr/lib/systemd/system/lockbridge.service",
             "/usr/lib/sysusers.d/lockbridge.conf",
             "/usr/lib/tmpfiles.d/lockbridge.conf",
             "/usr/lib/sysctl.d/60-lockbridge.conf",
             "/usr/share/doc/lockbridge/examples/lockbridge.example.toml",
             "/usr/share/doc/lockbridge/operations.md",
             "/usr/share/doc/lockbridge/schemas/events.schema.json"]


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


@unittest.skipUnless(os.geteuid() == 0, "installs a package: needs root (CI runs as root)")
class DebianPackage(unittest.TestCase):
    def setUp(self):
        if sh(["dpkg-query", "-W", "lockbridge"]).returncode == 0 or os.path.exists("/etc/lockbridge"):
            self.skipTest("lockbridge is already installed or configured here; not touching it")
        self.tmp = tempfile.mkdtemp(prefix="lockbridge-pkg-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_install_configure_check_and_purge(self):
        out = sh(["cpack", "-G", "DEB"], cwd=BUILD)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        debs = glob.glob(os.path.join(BUILD, "lockbridge_*.deb"))
        self.assertEqual(len(debs), 1, debs)
        deb = debs[0]
        self.addCleanup(lambda: sh(["dpkg", "--purge", "lockbridge"]))

        out = sh(["dpkg", "-i", deb])
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        for path in INSTALLED:
            self.assertTrue(os.path.isfile(path), path)
        self.assertTrue(os.access("/usr/bin/lockbridge", os.X_OK))
        user = pwd.getpwnam("lockbridge")
        self.assertEqual(user.pw_shell, "/usr/sbin/nologin")
        gid = grp.getgrnam("lockbridge").gr_gid
        st = os.stat("/etc/lockbridge/locks")
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_gid), (0o750, gid))
        self.assertEqual(sh(["/usr/bin/lockbridge", "version"]).stdout.strip(), "lockbridge 0.1.0")

        # The installer's steps from docs/operations.md, with the installed binary.
        for name in ["kek.key", "lookup.key"]:
            out = sh(["openssl", "rand", "-hex", "32"])
            path = f"/etc/lockbridge/secrets/{name}"
            with open(path, "w") as f:
                f.write(out.stdout)
            os.chmod(path, 0o640)
            os.chown(path, 0, gid)
        for lock in ["lock-01", "lock-02"]:
            out = sh(["/usr/bin/lockbridge", "provision", "lock", "--id", lock])
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertIn(f"PSK identity: {lock}", out.stdout)
            st = os.stat(f"/etc/lockbridge/locks/{lock}.psk")
            self.assertEqual((stat.S_IMODE(st.st_mode), st.st_gid), (0o640, gid))
        pki = Pki(os.path.join(self.tmp, "pki"))
        cert, key = pki.issue("gw-01")
        for src, dst in [(pki.ca, "ca.pem"), (cert, "gateway.pem"), (key, "gateway.key")]:
            shutil.copy(src, f"/etc/lockbridge/tls/{dst}")
        os.chmod("/etc/lockbridge/tls/gateway.key", 0o640)
        shutil.copy("/usr/share/doc/lockbridge/examples/lockbridge.example.toml",
                    "/etc/lockbridge/lockbridge.toml")
        os.chmod("/etc/lockbridge/secrets/kek.key", 0o600)  # root only: systemd passes it
        os.chown("/etc/lockbridge/secrets/kek.key", 0, 0)
        out = sh(["/usr/bin/lockbridge", "check-config", "/etc/lockbridge/lockbridge.toml"])
        # Outside systemd there is no credential: the error says how to give it.
        self.assertEqual(out.returncode, 78, out.stdout + out.stderr)
        self.assertIn("LoadCredential=lockbridge.kek", out.stderr)
        # As systemd runs ExecStartPre= (LoadCredential=lockbridge.kek:...).
        creds = os.path.join(self.tmp, "credentials")
        os.makedirs(creds)
        shutil.copy("/etc/lockbridge/secrets/kek.key", os.path.join(creds, "lockbridge.kek"))
        out = sh(["/usr/bin/lockbridge", "check-config", "/etc/lockbridge/lockbridge.toml"],
                 env=dict(os.environ, CREDENTIALS_DIRECTORY=creds))
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("OK", out.stdout)
        stats = sh(["/usr/bin/lockbridge", "credentials", "stats", "--config",
                    "/etc/lockbridge/lockbridge.toml", "--json"],
                   env=dict(os.environ, CREDENTIALS_DIRECTORY=creds))
        # No state yet (/var/lib/lockbridge is made by systemd's StateDirectory=):
        # the command says so, creates nothing and does not hang.
        self.assertEqual(stats.returncode, 1, stats.stdout)
        self.assertIn("no state yet", stats.stderr)
        self.assertFalse(os.path.exists("/var/lib/lockbridge/data.mdb"))

        out = sh(["dpkg", "--purge", "lockbridge"])
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        for path in INSTALLED + ["/etc/lockbridge"]:
            self.assertFalse(os.path.exists(path), path)


if __name__ == "__main__":
    unittest.main()
