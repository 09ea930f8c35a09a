#!/usr/bin/env python3
"""Puts a generated table into a document: replaces what lies between
`<!-- begin NAME -->` and `<!-- end NAME -->` in DOC with the content of the file NAME.

    benches/splice.py benches/compare.md BENCHMARKS.md

Used by benches/compare.sh and benches/transports.sh, so that BENCHMARKS.md is regenerated
from their runs; the prose around the markers is the reader's interpretation and is
reviewed by hand. Exits 1 if DOC lacks the markers.
"""
import sys

name, doc = sys.argv[1], sys.argv[2]
table = open(name).read().rstrip("\n")
text = open(doc).read()
begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
if begin not in text or end not in text:
    sys.exit(f"{doc} has no {begin} ... {end} block")
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
open(doc, "w").write(f"{head}{begin}\n{table}\n{end}{tail}")
print(f"{doc}: {name} spliced in", file=sys.stderr)
