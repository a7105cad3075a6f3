#!/usr/bin/env python3
"""Checks that docs.rs will show every feature-gated item with its feature.

Usage: doc_cfg.py BARE_DOC_DIR FULL_DOC_DIR

Both arguments are rustdoc output folders of the crate (`target/doc/sparsebuf`), built with the
nightly `--cfg docsrs` flags: BARE without features, FULL with all of them. An item is
feature-gated when it is in FULL but not in BARE: an item page (a struct, a function, a constant, a
re-exported crate), or a method or trait impl on a page both have. Each must carry rustdoc's
portability note ("Available on crate feature ... only"). Exits 1, listing the items without it.
"""

import html
import re
import sys
from pathlib import Path

NOTE = "Available on <strong>crate feature"
# Anchors of a page's own entries: methods, trait impls, associated items.
ANCHOR = re.compile(r'<(?:section|details)[^>]*\bid="((?:method|impl|tymethod|associatedconstant)[.-][^"]+)"')


def pages(root: Path) -> dict[str, str]:
    """The item pages of the crate's root module (its public face), by file name."""
    return {
        p.name: p.read_text(encoding="utf-8")
        for p in root.glob("*.html")
        if p.name not in ("index.html", "all.html")
    }


def entries(text: str) -> dict[str, tuple[str, str]]:
    """Each trait impl and method of a page's own and trait impls (not the blanket impls other
    crates add), keyed by the trait impl it sits in and its name (rustdoc numbers repeated
    anchors in page order, so `write-1` can change its meaning), mapped to its text up to the
    next entry and the key of its trait impl ("" in an inherent impl)."""
    text = text.split('id="synthetic-implementations"')[0].split('id="blanket-implementations"')[0]
    found = list(ANCHOR.finditer(text))
    out, block = {}, ""
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(text)
        anchor = html.unescape(m.group(1))
        if anchor.startswith("impl"):
            # Inherent impl blocks are rustdoc groupings: their methods carry the notes.
            block = anchor if "-for-" in anchor else ""
            if not block:
                continue
            key = block
        else:
            key = f"{block}#{re.sub(r'-[0-9]+$', '', anchor)}" if block else anchor
        out[key] = (text[m.start() : end], block)
    return out


def rows(text: str) -> dict[str, str]:
    """The crate root's list entries, keyed by what they name."""
    out = {}
    for row in re.findall(r"<dt\b.*?</dt>", text, flags=re.S):
        key = re.search(r'(?:href|id)="([^"]+)"', row)
        if key:
            out[key.group(1)] = row
    return out


def main() -> int:
    bare_dir, full_dir = Path(sys.argv[1]), Path(sys.argv[2])
    bare, full = pages(bare_dir), pages(full_dir)
    missing, checked = [], []
    for name, text in sorted(full.items()):
        if name not in bare:
            checked.append(name)
            if NOTE not in text:
                missing.append(name)
            continue
        old, new = entries(bare[name]), entries(text)
        for key, (body, block) in new.items():
            if key in old:
                continue
            label = f"{name}#{key}"
            checked.append(label)
            # A method's note sits in its own entry, or in the heading of the gated trait impl
            # it belongs to.
            gated_impl = block and block not in old and NOTE in new[block][0]
            if NOTE not in body and not gated_impl:
                missing.append(label)
    # The crate root's list: each gated entry (an item or a re-exported crate) carries a badge.
    bare_rows = rows((bare_dir / "index.html").read_text(encoding="utf-8"))
    for key, row in rows((full_dir / "index.html").read_text(encoding="utf-8")).items():
        if key in bare_rows:
            continue
        checked.append(f"index.html: {key}")
        if "stab portability" not in row:
            missing.append(f"index.html: {key}")
    print(f"{len(checked)} feature-gated items:")
    for item in checked:
        print(f"  {item}")
    if missing:
        print("without their feature on docs.rs:", file=sys.stderr)
        for item in missing:
            print(f"  {item}", file=sys.stderr)
        return 1
    if len(checked) == 0:
        print("no feature-gated items found: the two builds look alike", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
