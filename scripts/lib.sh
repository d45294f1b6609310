# Shared by scripts/up and scripts/test. Sourced, not run.

# Installs the Debian packages named as arguments when any is missing:
# directly as root, otherwise by printing the exact command and failing.
ensure_debian_packages() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    return 1
  fi
  echo "installing ${missing[*]} ..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# What the tests and the local stack run on.
RAVE_DEBIAN_PACKAGES=(postgresql nginx openssl curl prometheus prometheus-pushgateway prometheus-node-exporter prometheus-postgres-exporter prometheus-nginx-exporter)
