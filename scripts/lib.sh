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
RAVE_DEBIAN_PACKAGES=(postgresql nginx openssl curl prometheus prometheus-pushgateway prometheus-node-exporter prometheus-postgres-exporter prometheus-nginx-exporter fonts-dejavu-core)

# What the test command needs besides: Nix's evaluator for the NixOS checks.
RAVE_TEST_DEBIAN_PACKAGES=(nix-bin python3)

# Installs pinned crates.io tools (name@version ...) when a binary is missing.
ensure_cargo_tools() {
  for spec in "$@"; do
    local name="${spec%@*}"
    if ! command -v "$name" >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/$name" ]; then
      echo "installing $spec from crates.io ..." >&2
      cargo install --locked --quiet "$spec"
    fi
  done
}

# Nix lint and format, pinned (tests/nixos-checks).
RAVE_CARGO_TOOLS=(deadnix@1.3.1 nixpkgs-fmt@1.3.0 cargo-deny@0.20.2 cargo-fuzz@0.13.2)

# GitLab's CI schema check (tests/pipeline), from PyPI.
ensure_pip_tools() {
  for spec in "$@"; do
    local name="${spec%%==*}"
    if ! command -v "$name" >/dev/null 2>&1; then
      echo "installing $spec from PyPI ..." >&2
      python3 -m pip install --quiet "$spec"
    fi
  done
}
RAVE_PIP_TOOLS=(check-jsonschema==0.39.0)
