# Shared by scripts/up, scripts/test, scripts/install and scripts/fresh-check.
# Sourced, not run.
#
# Every ensure_* function installs only what is missing (or at the wrong
# version), prints "installing ..." on stderr exactly when it installs, and is
# a no-op the second time: scripts/fresh-check relies on both.

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

# What the tests and the local stack run on. procps: kill and ps.
RAVE_DEBIAN_PACKAGES=(postgresql nginx openssl curl procps prometheus prometheus-pushgateway prometheus-node-exporter prometheus-postgres-exporter prometheus-nginx-exporter prometheus-alertmanager prometheus-blackbox-exporter fonts-dejavu-core pgbackrest)

# What the test command needs besides: Nix's evaluator and systemd-analyze
# for the NixOS checks, Python and its venv for the pipeline's schema check.
RAVE_TEST_DEBIAN_PACKAGES=(nix-bin systemd python3 python3-venv)

# rustfmt and clippy: rustup's minimal profile has neither.
RAVE_RUST_COMPONENTS=(rustfmt clippy)
ensure_rust_components() {
  local missing=()
  for component in "$@"; do
    case "$component" in
      rustfmt) cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt) ;;
      clippy) cargo clippy --version >/dev/null 2>&1 || missing+=(clippy) ;;
      *) missing+=("$component") ;;
    esac
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v rustup >/dev/null 2>&1; then
    echo "missing Rust components: ${missing[*]}, and no rustup to add them; install them with your Rust toolchain" >&2
    return 1
  fi
  echo "installing Rust components ${missing[*]} ..." >&2
  rustup component add "${missing[@]}"
}

# Installs pinned crates.io tools (name@version ...) into $CARGO_HOME/bin when
# the binary is missing or reports another version.
ensure_cargo_tools() {
  local bin="${CARGO_HOME:-$HOME/.cargo}/bin"
  for spec in "$@"; do
    local name="${spec%@*}" version="${spec#*@}" found=""
    if [ -x "$bin/$name" ]; then
      found="$bin/$name"
    elif command -v "$name" >/dev/null 2>&1; then
      found=$(command -v "$name")
    fi
    # nixpkgs-fmt prints its version on stderr and exits 1.
    if [ -n "$found" ] && grep -qw -- "$version" <<<"$("$found" --version 2>&1 || true)"; then
      continue
    fi
    echo "installing $spec from crates.io ..." >&2
    cargo install --locked --quiet "$spec"
  done
}

# Nix lint and format (tests/nixos-checks), licence checks, fuzzing; pinned.
RAVE_CARGO_TOOLS=(deadnix@1.3.1 nixpkgs-fmt@1.3.0 cargo-deny@0.20.2 cargo-fuzz@0.13.2)

# Python tools live in a venv of their own, never in the system's Python
# (Debian's refuses `pip install`: PEP 668). scripts/test puts its bin/ on PATH.
rave_tools_dir() {
  echo "${RAVE_TOOLS_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/rave-tools}"
}
ensure_pip_tools() {
  local venv
  venv="$(rave_tools_dir)/venv"
  if [ ! -x "$venv/bin/pip" ]; then
    echo "installing a Python venv for RAVE's tools in $venv ..." >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  for spec in "$@"; do
    local installed
    installed=$("$venv/bin/pip" show "${spec%%==*}" 2>/dev/null | sed -n 's/^Version: //p' || true)
    if [ "$installed" != "${spec#*==}" ]; then
      echo "installing $spec from PyPI ..." >&2
      "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec"
    fi
  done
}
# GitLab's CI schema check (tests/pipeline); the NixOS test driver's own
# lint and type check of tests/rave-vm.py (tests/nixos-checks).
# Stripe's and Slack's own webhook libraries sign and check deliveries in
# ingest's tests of those presets (tests/providers/sdk.py), never at run time.
RAVE_PIP_TOOLS=(check-jsonschema==0.39.0 pyflakes==4.1.0 mypy==2.4.1 stripe==16.1.0 slack_sdk==3.48.0)

# Packages from the npm registry that tests read, never run: fetched as the
# registry's tarball with curl (no Node.js needed), checked against the
# integrity the registry publishes, and only the files named unpacked.
#   ensure_npm_files SCOPE/NAME VERSION SHA512-BASE64 FILE...
ensure_npm_files() {
  local name=$1 version=$2 integrity=$3
  shift 3
  local dir
  dir="$(rave_tools_dir)/npm/${name//\//-}-$version"
  local missing=0
  for file in "$@"; do [ -f "$dir/$file" ] || missing=1; done
  [ "$missing" -eq 0 ] && return 0
  echo "installing $name@$version from the npm registry ..." >&2
  mkdir -p "$dir"
  local tarball="$dir/package.tgz"
  curl -fsSL --retry 3 -o "$tarball" "https://registry.npmjs.org/$name/-/${name#*/}-$version.tgz"
  local got
  got="sha512-$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
  if [ "$got" != "$integrity" ]; then
    echo "$name@$version: the tarball's integrity is $got, not $integrity" >&2
    rm -f "$tarball"
    return 1
  fi
  tar -xzf "$tarball" -C "$dir" "$@"
  rm -f "$tarball"
}
# GitHub's REST OpenAPI description: the reconcile tests validate the
# GitHub double's answers against it (tests/github-openapi).
RAVE_NPM_FILES=("@octokit/openapi 23.0.2 sha512-pV8M7L9GY23AybNvTmo2nyjmpmnt6+2sRE/tqr0ZLQcPS4lnw7u5eZGNmwRNkBC3D7gZXbFx5AHzLUVRBXGDhg== package/generated/api.github.com.json")

# Everything the test command installs, in order; idempotent.
rave_install_test_tools() {
  ensure_debian_packages "${RAVE_DEBIAN_PACKAGES[@]}" "${RAVE_TEST_DEBIAN_PACKAGES[@]}"
  ensure_rust_components "${RAVE_RUST_COMPONENTS[@]}"
  ensure_cargo_tools "${RAVE_CARGO_TOOLS[@]}"
  ensure_pip_tools "${RAVE_PIP_TOOLS[@]}"
  local spec
  for spec in "${RAVE_NPM_FILES[@]}"; do
    # shellcheck disable=SC2086 # name, version, integrity, files: split on purpose
    ensure_npm_files $spec
  done
}

# The PATH the test command runs with: the pinned tools first.
rave_tools_path() {
  echo "$(rave_tools_dir)/venv/bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
}

# run_step NAME COMMAND...: runs one step of a script under `set -e`, times
# it, and records it for print_steps. A failing step prints the summary and
# exits with its status.
RAVE_STEPS=()
RAVE_STEPS_STARTED=$SECONDS
run_step() {
  local name=$1 start=$SECONDS status=0
  shift
  printf '\n==> %s\n' "$name"
  set +e
  (set -e; "$@")
  status=$?
  set -e
  local took=$((SECONDS - start))
  if [ "$status" -eq 0 ]; then
    RAVE_STEPS+=("$(printf '  ok      %6s  %s' "$(format_secs "$took")" "$name")")
  else
    RAVE_STEPS+=("$(printf '  FAILED  %6s  %s (exit %d)' "$(format_secs "$took")" "$name" "$status")")
    print_steps
    exit "$status"
  fi
}
format_secs() {
  printf '%dm%02ds' $(($1 / 60)) $(($1 % 60))
}
print_steps() {
  printf '\n==> summary\n'
  printf '%s\n' "${RAVE_STEPS[@]}"
  printf '  total   %6s\n' "$(format_secs $((SECONDS - RAVE_STEPS_STARTED)))"
}
