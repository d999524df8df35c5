"""Spine: a broken config stops lockbridge before it starts, naming file, line and key.

Real components: the lockbridge binary (run and check-config).
"""

import fcntl
import os
import pty
import select
import subprocess
import termios
import time
import unittest

from harness import LOCKBRIDGE, Process, Site, wait_for


class ConfigErrors(Site):
    locks = 1

    def run_with(self, text):
        with open(self.config, "w") as f:
            f.write(text)
        return subprocess.run([LOCKBRIDGE, "run", "--config", self.config], capture_output=True,
                              text=True, timeout=20)

    def good(self):
        with open(self.config) as f:
            return f.read()

    def test_unknown_key_wrong_type_missing_file(self):
        good = self.good()
        lines = good.splitlines()
        cases = [
            ("unknown key", good.replace("[store]\n", "[store]\ncolour = \"red\"\n"),
             "store.colour: unknown key"),
            ("wrong type", good.replace("status_interval_s = 1", "status_interval_s = \"1\""),
             "mqtt.status_interval_s: expected an integer, got a string"),
            # (a missing client certificate is a warning since issue 13: the
            # doors must not wait for the cloud; a lock's key is an error)
            ("missing lock key", good.replace(f"{self.psk_dir}/lock-01.psk",
                                              "/nonexistent/lock-01.psk"),
             "locks[0].psk_file: file /nonexistent/lock-01.psk does not exist"),
        ]
        for what, text, expected in cases:
            p = self.run_with(text)
            self.assertEqual(p.returncode, 78, f"{what}: {p.stderr}")
            self.assertIn(expected, p.stderr, what)
            # file:line:column: key
            line = next(i + 1 for i, l in enumerate(text.splitlines())
                        if expected.split(":")[0].split(".")[-1] in l
                        or (what == "missing lock key" and "/nonexistent/lock-01.psk" in l))
            self.assertIn(f"{self.config}:{line}:", p.stderr, what)
            self.assertIn("nothing was started", p.stderr)
            self.assertFalse(os.path.exists(os.path.join(self.state_dir, "data.mdb")))
        self.assertTrue(lines)

    def test_bad_command_lines_are_refused_and_change_nothing(self):
        locks = os.path.join(self.dir, "provisioned")
        cases = [
            (["frobnicate"], 64, "subcommand"),
            (["provision", "lock"], 64, "--id"),
            (["provision", "lock", "--id", "a/b", "--dir", locks], 64, "--id: expected"),
            (["provision", "lock", "--id", "ok-1", "--dir", locks, "--ble-address", "C0:FF:EE"], 64,
             "--ble-address: expected six hexadecimal pairs"),
            (["status", "--config", os.path.join(self.dir, "missing.toml")], 78, "cannot read"),
            (["journal", "stats", "--config", self.config], 1, "no state yet"),
            (["credentials"], 64, "subcommand is required"),
        ]
        for args, code, part in cases:
            out = subprocess.run([LOCKBRIDGE, *args], capture_output=True, text=True, timeout=20)
            self.assertEqual(out.returncode, code, (args, out.stdout, out.stderr))
            self.assertIn(part, out.stdout + out.stderr, args)
        self.assertFalse(os.path.exists(locks), "a refused provision wrote something")
        self.assertFalse(os.path.exists(self.state_dir), "a stats command created the state")
        # A lock's key is never overwritten by accident.
        ok = subprocess.run([LOCKBRIDGE, "provision", "lock", "--id", "lock-09", "--dir", locks],
                            capture_output=True, text=True, timeout=20)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        # The printed table is what goes into the config, as is.
        self.assertIn(f'  [[locks]]\n  id = "lock-09"\n  psk_file = "{locks}/lock-09.psk"\n\n', ok.stdout)
        with open(os.path.join(locks, "lock-09.psk")) as f:
            key = f.read()
        ble = subprocess.run([LOCKBRIDGE, "provision", "lock", "--id", "lock-10", "--dir", locks,
                              "--ble-address", "c0:ff:ee:00:00:10"], capture_output=True, text=True,
                             timeout=20)
        self.assertEqual(ble.returncode, 0, ble.stderr)
        self.assertIn(f'psk_file = "{locks}/lock-10.psk"\n  transport = "ble"\n'
                      f'  ble_address = "C0:FF:EE:00:00:10"\n', ble.stdout)
        again = subprocess.run([LOCKBRIDGE, "provision", "lock", "--id", "lock-09", "--dir", locks],
                               capture_output=True, text=True, timeout=20)
        self.assertEqual(again.returncode, 1)
        self.assertIn("--force", again.stderr)
        with open(os.path.join(locks, "lock-09.psk")) as f:
            self.assertEqual(f.read(), key)

    def test_check_config_accepts_the_good_file_and_the_examples_parse(self):
        p = subprocess.run([LOCKBRIDGE, "check-config", self.config], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("OK", p.stdout)
        p = subprocess.run([LOCKBRIDGE, "frobnicate"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 64)
        # --config as every other command takes it (issue 17); FILE and
        # --config together are refused.
        p = subprocess.run([LOCKBRIDGE, "check-config", "--config", self.config],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("OK", p.stdout)
        with open(self.config) as f:
            broken = f.read().replace("[store]\n", "[store]\ncolour = 1\n")
        bad = os.path.join(self.dir, "broken.toml")
        with open(bad, "w") as f:
            f.write(broken)
        p = subprocess.run([LOCKBRIDGE, "check-config", "-c", bad], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(p.returncode, 78, p.stdout + p.stderr)
        self.assertIn("store.colour: unknown key", p.stderr)
        p = subprocess.run([LOCKBRIDGE, "check-config", self.config, "--config", bad],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 64, p.stdout + p.stderr)
        # --version, beside the version command
        for args in (["--version"], ["version"]):
            p = subprocess.run([LOCKBRIDGE] + args, capture_output=True, text=True, timeout=20)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertRegex(p.stdout.strip(), r"^lockbridge \d+\.\d+\.\d+")

    def test_a_key_behind_a_passphrase_is_named_and_never_asked_for_on_a_terminal(self):
        # OpenSSL's default asks on the controlling terminal and waits: run
        # check-config with one, as an installer would, and the key locked.
        locked = os.path.join(self.dir, "locked.key")
        subprocess.run(["openssl", "pkey", "-in", self.gw_key, "-aes256", "-passout",
                        "pass:a passphrase nobody types", "-out", locked], check=True)
        with open(self.config) as f:
            text = f.read().replace(self.gw_key, locked)
        config = os.path.join(self.dir, "locked.toml")
        with open(config, "w") as f:
            f.write(text)
        text = self.on_a_terminal([LOCKBRIDGE, "check-config", config], until=None)
        self.assertNotIn("pass phrase", text.lower())
        self.assertIn("mqtt.key_file: is protected by a passphrase, which lockbridge never asks "
                      "for", text)
        # The daemon too: it starts and serves the locks (the doors never
        # wait for the cloud), names the key, and asks nothing.
        text = self.on_a_terminal([LOCKBRIDGE, "run", "--config", config],
                                  until="lockbridge: ready")
        self.assertNotIn("pass phrase", text.lower())
        self.assertIn("lockbridge: ready", text)
        self.assertIn("is protected by a passphrase", text)

    def on_a_terminal(self, cmd, until):
        """Runs `cmd` with a terminal of its own as its controlling terminal
        (where OpenSSL's default asks for a passphrase) until it ends, or
        until `until` appears in its output and it is then stopped. Fails if
        it waits on the terminal instead."""
        master, slave = pty.openpty()

        def controlling_terminal():
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        p = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave,
                             preexec_fn=controlling_terminal)
        os.close(slave)
        out = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if until and until.encode() in out:
                break
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the terminal closed: the process ended
                    break
                if not chunk:
                    break
                out += chunk
            elif p.poll() is not None:
                break
        if not until:
            # The terminal closes as the process exits: give it the moment
            # to be reaped before asking whether it is still waiting.
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        waited = p.poll() is None and not (until and until.encode() in out)
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        os.close(master)
        if waited:
            self.fail(f"{cmd[1]} waited on the terminal: {out!r}")
        return out.decode(errors="replace")

    def test_environment_and_command_line_override_the_file(self):
        env = dict(os.environ, LOCKBRIDGE_STORE__RETENTION_DAYS="91")
        p = subprocess.run([LOCKBRIDGE, "check-config", self.config], capture_output=True,
                           text=True, timeout=20, env=env)
        self.assertEqual(p.returncode, 78, p.stdout + p.stderr)
        self.assertIn("environment LOCKBRIDGE_STORE__RETENTION_DAYS:1:5: store.retention_days: "
                      "expected an integer from 1 to 90, got 91", p.stderr)
        # The command line wins over the environment.
        p = subprocess.run([LOCKBRIDGE, "check-config", self.config, "--set",
                            "store.retention_days=30"], capture_output=True, text=True,
                           timeout=20, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = subprocess.run([LOCKBRIDGE, "check-config", self.config, "--set",
                            "gateway.log_level=loud"], capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 78)
        self.assertIn("command line --set gateway.log_level", p.stderr)
        p = subprocess.run([LOCKBRIDGE, "check-config", self.config, "--set", "no-equals-sign"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 64)
        self.assertIn("expected section.key=value", p.stderr)
        # The daemon runs with the override: the status shows it.
        self.ready_seen = 0
        self.gateway = Process(
            [LOCKBRIDGE, "run", "--config", self.config, "--set", "store.retention_days=7"],
            self.gateway_log)
        wait_for(self.gateway_ready, 15, "lockbridge to be ready")
        rc, status = self.status()
        self.assertEqual(rc, 0, status)
        self.assertEqual(status["privacy"]["retention_days"], 7)


if __name__ == "__main__":
    unittest.main()
