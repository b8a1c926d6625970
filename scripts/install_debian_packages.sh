#!/usr/bin/env bash
# Installs the Debian packages `make test` needs, only those whose command is missing.
# One line per need: the command tests look for (or a file, given by its absolute path),
# then the package that provides it.
# Add a line here when a test needs a new program; nothing else calls apt-get.
set -euo pipefail

needs=(
    "java openjdk-17-jre-headless"   # Spark in local mode (the second engine)
    "plink2 plink2"                  # reference for GWAS agreement tests
    "borg borgbackup"                # backup engine of `medlake backup`
    "chromium chromium"              # the web UI's browser tests (Playwright drives it)
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc fonts-wqy-microhei"  # Chinese pages in screenshots
)

missing=()
for need in "${needs[@]}"; do
    read -r command package <<<"$need"
    if [[ "$command" == /* ]]; then
        [ -e "$command" ] || missing+=("$package")
    else
        command -v "$command" >/dev/null 2>&1 || missing+=("$package")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "installing Debian packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
