#!/usr/bin/env bash
# Fetches KaTeX from the npm registry (not committed) into target/katex and writes
# target/katex/header.html, a rustdoc header that loads it from there, so the derivation renders
# offline. katex-header.html (the CDN version) stays for docs.rs.
#
#   scripts/katex.sh && RUSTDOCFLAGS="--html-in-header target/katex/header.html" cargo doc --no-deps -p elbo
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.16.11
DEST=target/katex
if [ ! -f "$DEST/katex/dist/katex.min.js" ]; then
    mkdir -p "$DEST"
    (cd "$DEST" && npm pack --silent "katex@$VERSION" > /dev/null && tar xzf "katex-$VERSION.tgz" && mv package katex)
fi
DIST="$(cd "$DEST/katex/dist" && pwd)"
cat > "$DEST/header.html" <<HTML
<!-- KaTeX $VERSION from $DIST (scripts/katex.sh): renders \$...\$ and \$\$...\$\$ offline. -->
<link rel="stylesheet" href="file://$DIST/katex.min.css">
<script defer src="file://$DIST/katex.min.js"></script>
<script defer src="file://$DIST/contrib/auto-render.min.js"
  onload="renderMathInElement(document.body, {delimiters: [
    {left: '\$\$', right: '\$\$', display: true}, {left: '\$', right: '\$', display: false}],
    throwOnError: false});"></script>
HTML
echo "$DEST/header.html"
