#!/usr/bin/env python3
"""The minimum Rust each cargo feature of sparsebuf needs, from what the resolved dependencies
declare (`rust-version` in `cargo metadata`), and a check that README.md and Cargo.toml say the
same.

    .ci/msrv.py          # prints the table, exits 1 if README.md's or Cargo.toml's MSRV disagree
"""
import json, re, subprocess, sys

def rust_versions():
    """`(name, version) -> rust-version` for every package cargo knows here."""
    args = ["cargo", "metadata", "--format-version", "1", "--locked"]
    meta = json.loads(subprocess.run(args, capture_output=True, check=True, text=True).stdout)
    return {(p["name"], p["version"]): p.get("rust_version") for p in meta["packages"]}

def msrv(features, known):
    """The highest rust-version among what building the library with `features` compiles."""
    args = ["cargo", "tree", "-p", "sparsebuf", "-e", "normal,build", "--prefix", "none",
            "--locked", "--format", "{p}"]
    if features:
        args += ["--features", features]
    out = subprocess.run(args, capture_output=True, check=True, text=True).stdout
    versions = []
    for line in set(out.splitlines()):
        parts = line.split()
        if len(parts) < 2:
            continue
        name, version = parts[0], parts[1].lstrip("v")
        if name == "sparsebuf":
            continue  # its own rust-version is what is being worked out
        declared = known.get((name, version))
        if declared:
            versions.append((tuple(int(x) for x in declared.split(".")[:2]), name))
    top = max(versions)
    return ".".join(str(x) for x in top[0]), top[1]

known = rust_versions()
rows = [("core", ""), ("tokio", "tokio"), ("client", "client"), ("server", "server"), ("http", "http"),
        ("object-store", "object-store")]
found = {}
for name, features in rows:
    version, why = msrv(features, known)
    found[name] = version
    print(f"{name:13} {version:6} (highest: {why})")

readme = open("README.md", encoding="utf-8").read()
wrong = []
# The README's feature table: `| feature | ... | minimum Rust |`, the core's row named `(none)`.
for name, version in found.items():
    label = "(none)" if name == "core" else f"`{name}`"
    m = re.search(r"^\| " + re.escape(label) + r" \|.*\| (1\.\d+) \|$", readme, re.M)
    if not m or m.group(1) != version:
        wrong.append(f"README.md: the {label} row should say {version} (found {m.group(1) if m else 'no row'})")
own = re.search(r'^rust-version = "([0-9.]+)"', open("Cargo.toml", encoding="utf-8").read(), re.M)
if not own or own.group(1) != found["core"]:
    wrong.append(f"Cargo.toml: rust-version should be {found['core']} (found {own.group(1) if own else 'nothing'})")
for line in wrong:
    print(line, file=sys.stderr)
sys.exit(1 if wrong else 0)
