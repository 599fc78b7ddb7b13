#!/usr/bin/env python3
"""Checks the built derivation page: every formula of src/derivation.rs reaches the HTML as the
TeX KaTeX should see (nothing eaten by Markdown: no lost backslash, no underscore turned into
emphasis), and no mangled form such as ',|,' is left. With --dom, also checks a DOM dumped by
headless Chromium after KaTeX ran: every formula rendered, none reported as an error.

    python3 scripts/check_derivation_html.py target/doc/elbo/derivation/index.html [--dom dom.html]
"""
import html
import re
import sys


def formulas(source):
    """The math segments of the module's doc comment, as KaTeX must receive them."""
    text = "\n".join(l[3:] for l in open(source).read().split("\n") if l.startswith("//!"))
    segs = re.findall(r"\$\$(.+?)\$\$|\$([^$\n]+?)\$", text, flags=re.S)
    # Markdown turns a backslash before ASCII punctuation into the punctuation alone.
    unescape = lambda s: re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", s)
    return [unescape(d or i) for d, i in segs]


def page_text(path):
    raw = open(path, encoding="utf-8").read()
    body = raw[raw.find("<main"):] if "<main" in raw else raw
    return html.unescape(re.sub(r"<[^>]+>", "", body))


def main():
    page = sys.argv[1]
    source = "src/derivation.rs"
    text = page_text(page)
    problems = []
    expected = formulas(source)
    for f in expected:
        if f not in text:
            problems.append(f"formula missing or mangled in the HTML: {f[:90]}")
    # What Markdown leaves of '\,\|\,' and '\, dz' when it eats the backslashes.
    for bad in [r"(?<!\\),\|,", r"(?<!\\), dz", r"KL\(q ,"]:
        if re.search(bad, text):
            problems.append(f"mangled TeX in the HTML: {bad!r}")
    # (A prime written ' would reach KaTeX as a typographic quote: rustdoc's smart
    # punctuation. The formula check above catches it, since the source has ' and the page not.)
    if "--dom" in sys.argv:
        dom = open(sys.argv[sys.argv.index("--dom") + 1], encoding="utf-8").read()
        rendered = dom.count('class="katex"') + dom.count('class="katex-display"')
        errors = re.findall(r'class="katex-error"[^>]*title="([^"]*)"', dom)
        if errors:
            problems += [f"KaTeX error: {html.unescape(e)[:120]}" for e in errors]
        if rendered < len(expected):
            problems.append(f"only {rendered} formulas rendered, {len(expected)} written")
        print(f"{rendered} rendered KaTeX elements, {len(errors)} errors")
    print(f"{len(expected)} formulas checked in {page}")
    if problems:
        print("\n".join(problems))
        sys.exit(1)


if __name__ == "__main__":
    main()
