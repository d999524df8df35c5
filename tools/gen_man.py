#!/usr/bin/python3
"""Writes the manual pages lockbridge(8) and lockbridge.toml(5) from the
docs, so that they say what docs/operations.md and docs/configuration.md say
(the docs stay the one place to edit).

    gen_man.py SOURCE_DIR VERSION OUT_DIR

lockbridge(8): the commands, doctor's checks and the exit codes from
operations.md. lockbridge.toml(5): every section's table of keys from
configuration.md, with the paragraphs that follow each table.
"""

import os
import re
import sys

DATE = "2026-12-01"


def roff_text(text):
    """Markdown inline text as roff: escapes, `code` bold, **strong** bold."""
    text = text.replace("\\|", "|")  # markdown's escaped pipe in tables
    text = text.replace("\\", "\\e")
    text = text.replace("-", "\\-")
    text = re.sub(r"`([^`]*)`", lambda m: "\\fB" + m.group(1) + "\\fR", text)
    text = re.sub(r"\*\*([^*]*)\*\*", lambda m: "\\fB" + m.group(1) + "\\fR", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # links: their text
    return text


def line(text):
    """A text line that roff does not take for a request."""
    text = roff_text(text)
    if text.startswith(".") or text.startswith("'"):
        text = "\\&" + text
    return text


def sections(markdown, level="## "):
    """(heading, body lines) for each heading of the given level."""
    out, heading, body = [], None, []
    for l in markdown.splitlines():
        if l.startswith(level):
            if heading is not None:
                out.append((heading, body))
            heading, body = l[len(level):].strip(), []
        elif heading is not None:
            body.append(l)
    if heading is not None:
        out.append((heading, body))
    return out


def table_rows(body):
    """The cells of each data row of the first markdown table in body."""
    rows = []
    for l in body:
        if not l.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", l.strip())[1:-1]]
        if all(re.fullmatch(r":?-+:?", c) for c in cells):
            continue
        rows.append(cells)
    return rows[1:]  # without the header


def paragraphs(body):
    """Text paragraphs of body outside tables and code blocks, joined."""
    out, cur = [], []
    for l in body:
        if l.startswith("|") or l.startswith("    ") or l.startswith("```"):
            if cur:
                out.append(" ".join(cur))
                cur = []
            continue
        if not l.strip():
            if cur:
                out.append(" ".join(cur))
                cur = []
            continue
        cur.append(l.strip())
    if cur:
        out.append(" ".join(cur))
    return out


def header(name, section, version, title):
    return [f'.TH {name.upper()} {section} "{DATE}" "lockbridge {version}" "{title}"', ".nh", ".ad l"]


def tagged(term, text):
    return [".TP", line(term), line(text)]


def page8(src, version):
    with open(os.path.join(src, "docs/operations.md")) as f:
        ops = dict(sections(f.read()))
    out = header("lockbridge", 8, version, "System Administration")
    out += [".SH NAME", "lockbridge \\- on\\-site gateway between door locks and the cloud",
            ".SH SYNOPSIS",
            "\\fBlockbridge run\\fR [\\fB\\-\\-config\\fR \\fIFILE\\fR]",
            ".br",
            "\\fBlockbridge\\fR \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fB\\-\\-config\\fR \\fIFILE\\fR]",
            ".SH DESCRIPTION",
            line("lockbridge serves a site's electronic door locks over CoAP/DTLS-PSK and BLE, "
                 "decides access from a credential set kept on the box so doors work without the "
                 "cloud, keeps every lock event in a durable journal until the cloud's MQTT "
                 "broker has acknowledged it, and relays pseudonymised audit events over MQTT "
                 "with mutual TLS. It runs as the systemd service lockbridge.service; its "
                 "configuration is described in lockbridge.toml(5)."),
            ".SH COMMANDS"]
    for cells in table_rows(ops["Commands"]):
        out += tagged(cells[0], cells[1])
    out += [".SH DOCTOR"]
    for p in paragraphs(ops["Doctor"])[:1]:
        out.append(line(p))
    for cells in table_rows(ops["Doctor"]):
        out += tagged(cells[0], cells[1])
    out += [".SH EXIT STATUS"]
    for cells in table_rows(ops["Exit codes"]):
        out += tagged(cells[0], cells[1])
    out += [".SH FILES",
            ".TP", "/etc/lockbridge/lockbridge.toml", "the configuration (lockbridge.toml(5))",
            ".TP", "/etc/lockbridge/lockbridge.toml.example", "the commented example",
            ".TP", "/etc/lockbridge/secrets/kek.key",
            "the key\\-encryption key, handed to the service by systemd (LoadCredential=)",
            ".TP", "/etc/lockbridge/locks/", "one PSK file per lock",
            ".TP", "/var/lib/lockbridge/", "the state (LMDB)",
            ".TP", "/run/lockbridge/status.sock", "the local control socket",
            ".SH SEE ALSO",
            "lockbridge.toml(5), systemctl(1), journalctl(1);",
            "/usr/share/doc/lockbridge/operations.md and the other documents there."]
    return out


def page5(src, version):
    with open(os.path.join(src, "docs/configuration.md")) as f:
        conf = f.read()
    out = header("lockbridge.toml", 5, version, "File Formats")
    out += [".SH NAME", "lockbridge.toml \\- configuration of the lockbridge gateway",
            ".SH SYNOPSIS", "/etc/lockbridge/lockbridge.toml", ".SH DESCRIPTION"]
    parts = sections(conf)
    intro = conf.split("\n## ", 1)[0].splitlines()[1:]
    for p in paragraphs(intro):
        out += [".PP", line(p)]
    for heading, body in parts:
        rows = table_rows(body)
        if not heading.startswith("`"):
            continue
        out += [".SH " + line(heading.replace("`", "").upper())]
        for cells in rows:
            key, kind, default, meaning = (cells + [""] * 4)[:4]
            default = default if default in ("required", "none") else "default " + default
            out += tagged(f"{key} ({kind}; {default})", meaning)
        for p in paragraphs(body):
            out += [".PP", line(p)]
    out += [".SH SEE ALSO", "lockbridge(8); /usr/share/doc/lockbridge/configuration.md."]
    return out


def main():
    src, version, dest = sys.argv[1:4]
    os.makedirs(dest, exist_ok=True)
    for name, lines in (("lockbridge.8", page8(src, version)),
                        ("lockbridge.toml.5", page5(src, version))):
        with open(os.path.join(dest, name), "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
