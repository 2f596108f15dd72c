#!/bin/sh
# Ensure the system programs lora-trace uses exist; install them from Debian's packages when apt-get can run.
# Usage: scripts/system-deps.sh PROGRAM...   (known programs: dot)
status=0
for program in "$@"; do
  case "$program" in
    dot) package=graphviz ;;
    chromium) package=chromium ;;
    *) echo "system-deps: unknown program '$program'"; exit 2 ;;
  esac
  command -v "$program" >/dev/null 2>&1 && continue
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: installing $package (for '$program') with apt-get"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package"; } >/dev/null 2>&1 \
      || { echo "system-deps: apt-get install $package failed"; status=1; }
  else
    echo "system-deps: '$program' is missing. Install it with: sudo apt-get install $package" \
         "(macOS: brew install $package). lora-trace then writes .dot files only."
  fi
done
exit $status
