#!/usr/bin/env bash
# Renders an HTML page of etl-pipe (`profile --html`, `quality report`) in headless Chromium
# with every host name unresolvable, and fails when the page is not self-contained (a script,
# an http(s) resource), when Chromium logs a console error or a failed load, or when no
# screenshot comes out. Needs Debian's `chromium` (apt-get install chromium): not part of the
# test command, which does not install it.
#
#   bash scripts/check-html.sh PAGE.html [SCREENSHOT.png] [WIDTHxHEIGHT]
#
# The screenshot goes to /tmp/<page name>.png unless given; keep it out of the repository.
set -euo pipefail
page="${1:?usage: check-html.sh PAGE.html [SCREENSHOT.png] [WIDTHxHEIGHT]}"
[ -f "$page" ] || { echo "check-html: no file $page" >&2; exit 1; }
shot="${2:-/tmp/$(basename "${page%.*}").png}"
size="${3:-1400x2000}"
browser="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$browser" ] || { echo "check-html: chromium not found (apt-get install chromium)" >&2; exit 1; }

fail=0
# Self-contained: no scripts, no resources fetched from elsewhere.
if grep -Eiq '<script|(src|href)="https?:|url\(["'\'']?https?:|@import' "$page"; then
  echo "check-html: $page is not self-contained:" >&2
  grep -Eion '<script|(src|href)="https?:[^"]*|url\(["'\'']?https?:[^)]*|@import[^;]*' "$page" | head -5 >&2
  fail=1
fi
# Nothing loaded from a file either: the page is one file (data: URLs are fine).
if grep -Eio '(src|href)="[^"#][^"]*"' "$page" | grep -Evq '^(src|href)="data:'; then
  echo "check-html: $page loads other files:" >&2
  grep -Eio '(src|href)="[^"#][^"]*"' "$page" | grep -Ev '^(src|href)="data:' | head -5 >&2
  fail=1
fi

log="$(mktemp)"
profile="$(mktemp -d)"
trap 'rm -rf "$log" "$profile"' EXIT
rm -f "$shot"
url="file://$(cd "$(dirname "$page")" && pwd)/$(basename "$page")"
# No host resolves: a page that tried to fetch something would log net::ERR_NAME_NOT_RESOLVED.
if ! timeout 60 "$browser" --headless --no-sandbox --disable-gpu --no-first-run \
    --user-data-dir="$profile" --host-resolver-rules='MAP * ~NOTFOUND' \
    --enable-logging=stderr --v=0 --hide-scrollbars \
    --window-size="${size/x/,}" --screenshot="$shot" "$url" >"$log" 2>&1; then
  echo "check-html: chromium failed on $page:" >&2
  tail -20 "$log" >&2
  fail=1
fi
if grep -Eq 'CONSOLE|Uncaught|net::ERR_|Failed to load|Not allowed to load' "$log"; then
  echo "check-html: chromium reported errors on $page:" >&2
  grep -E 'CONSOLE|Uncaught|net::ERR_|Failed to load|Not allowed to load' "$log" | head -20 >&2
  fail=1
fi
if [ ! -s "$shot" ]; then
  echo "check-html: no screenshot of $page" >&2
  fail=1
fi
[ "$fail" -eq 0 ] && echo "check-html: $page rendered without errors; screenshot $shot"
exit "$fail"
