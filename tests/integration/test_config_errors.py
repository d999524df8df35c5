"""Spine: a broken config stops lockbridge before it starts, naming file, line and key.

Real components: the lockbridge binary (run and check-config).
"""

import os
import subprocess
import unittest

from harness import LOCKBRIDGE, Site


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
            ("missing certificate", good.replace(self.gw_cert, "/nonexistent/gw.pem"),
             "mqtt.cert_file: file /nonexistent/gw.pem does not exist"),
        ]
        for what, text, expected in cases:
            p = self.run_with(text)
            self.assertEqual(p.returncode, 78, f"{what}: {p.stderr}")
            self.assertIn(expected, p.stderr, what)
            # file:line:column: key
            line = next(i + 1 for i, l in enumerate(text.splitlines())
                        if expected.split(":")[0].split(".")[-1] in l
                        or (what == "missing certificate" and "/nonexistent/gw.pem" in l))
            self.assertIn(f"{self.config}:{line}:", p.stderr, what)
            self.assertIn("nothing was started", p.stderr)
            self.assertFalse(os.path.exists(os.path.join(self.state_dir, "data.mdb")))
        self.assertTrue(lines)

    def test_check_config_accepts_the_good_file_and_the_examples_parse(self):
        p = subprocess.run([LOCKBRIDGE, "check-config", self.config], capture_output=True,
                           text=True, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("OK", p.stdout)
        p = subprocess.run([LOCKBRIDGE, "frobnicate"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 64)


if __name__ == "__main__":
    unittest.main()
